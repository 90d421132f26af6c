"""Where the policy places each host, for the dashboard, and the fleet's counts over time.

`placements_of` reads the policy in memory; `FleetRecorder.refresh` (run by the housekeeper,
once per fleet) copies it to ``host_placements`` when the policy changed, adds the hosts
enrolled since, and records a snapshot of the fleet's counts (`storage.snapshots`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fleetwatch.collector.storage.fleet_view import FleetView, Scope
from fleetwatch.collector.storage.placements import Placement

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.policy import Baseline, Policy, PolicySource
    from fleetwatch.collector.storage.snapshots import Kind
    from fleetwatch.collector.storage.store import Store

AGE = "max_report_age"


def default_age(policy: Policy) -> int:
    """The report age allowed to a host the policy does not list (seconds)."""
    return int(policy.defaults.max_report_age)


def placements_of(policy: Policy) -> list[Placement]:
    """Every host the policy lists, with its unit, groups and report age allowed.

    The age is resolved as `Policy.for_host` resolves it (the host's own, else its last group
    that sets one, else the defaults), without building each host's whole baseline: 100,000
    hosts take a fraction of a second.
    """
    fallback = default_age(policy)

    def age_of(layers: list[Baseline]) -> int:
        for layer in reversed(layers):
            if AGE in layer.model_fields_set:
                return int(layer.max_report_age)
        return fallback

    return [
        Placement(
            host_id=host_id,
            unit=entry.unit,
            groups=tuple(entry.groups),
            max_report_age=age_of([*(policy.groups[g] for g in entry.groups), entry]),
            listed=True,
        )
        for host_id, entry in policy.hosts.items()
    ]


class FleetRecorder:
    """Keeps ``host_placements`` in step with the policy and records the fleet's counts."""

    def __init__(self, store: Store, policy: PolicySource) -> None:
        self.store = store
        self.policy = policy
        self._placed_digest: str | None = None  # the policy this process last placed hosts by

    def place(self) -> None:
        """Place every host by the policy in force (all anew if it changed since this process
        last did), and the hosts enrolled since."""
        policy = self.policy.current
        age = default_age(policy)
        with self.store.write() as conn:
            if self._placed_digest != policy.digest:
                self.store.placements.replace(conn, placements_of(policy), age)
            else:
                self.store.placements.add_enrolled(conn, age)
        self._placed_digest = policy.digest

    def refresh(self, now: datetime | None = None) -> list[Kind]:
        """Place the hosts, count the fleet (three aggregate queries) and record the counts
        as the live snapshot, and the hour's and the day's when not taken yet."""
        now = now or datetime.now(UTC)
        self.place()
        with self.store.read() as conn:
            counts = FleetView(conn, default_age(self.policy.current), now).unit_counts(Scope())
        with self.store.write() as conn:
            return self.store.snapshots.record(conn, now, counts)
