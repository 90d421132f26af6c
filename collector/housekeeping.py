"""Housekeeping: the collector's background work, and the part of it done once per fleet.

Every process follows the policy file (each holds the policy in memory to evaluate the
reports it takes). What writes to the whole database runs in one process of the fleet only,
the holder of the housekeeping lease (`storage.lease`), however many workers or collector
hosts share the database:

- after a policy change, evaluating again the hosts whose baseline, unit or groups it
  changed (`compliance.reevaluation`), and no other;
- after new vulnerability data (imported by hand in any process, or fetched here from
  ``vulnerability_urls`` every ``vulnerability_refresh_hours``), evaluating every host
  against it without waiting for their reports;
- when it takes the lease (at start, or from a holder that died), the same check: hosts
  whose last evaluation was against another policy or data than those in force are
  evaluated, which is none when nothing changed while no process held it. After a pass
  that evaluated hosts, the next round checks once more, for hosts a worker still on the
  old policy evaluated in between;
- pruning reports and section contents past ``report_retention_days``;
- every ``dashboard_snapshot_seconds``, placing hosts by the policy and recording the fleet's
  counts for the dashboard (`compliance.placement`).
- every round, the casework time does (`compliance.casework`): the policy's waivers kept in
  the database, waivers expiring and expired, fixes verified by time, findings overdue, each
  announced once in the event log.

Every process follows the vulnerability data too: it loads it again when what is stored
changed, for the reports it takes.

When the holder dies, another process takes the lease at its next check (every
``policy_check_interval`` seconds) and carries on.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector.storage.lease import FleetLease
from fleetwatch.collector.vulns.model import DataFormatError
from fleetwatch.collector.vulns.refresh import refresh_from

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine

    from fleetwatch.collector.compliance.policy import PolicySource
    from fleetwatch.collector.settings import CollectorSettings
    from fleetwatch.collector.vulns.data import KnownVulnerabilities

log = structlog.get_logger(__name__)

LEASE_NAME = "housekeeping"
FIRST_PRUNE_AFTER = 60.0
PRUNE_EVERY = 3600.0


class Housekeeper:
    """A thread doing one round of housekeeping every ``policy_check_interval`` seconds."""

    def __init__(  # noqa: PLR0913  (one keyword per duty the fleet does once)
        self,
        settings: CollectorSettings,
        engine: Engine,
        policy: PolicySource,
        *,
        reevaluate: Callable[[], int],
        prune: Callable[[datetime], tuple[int, int]],
        vulnerabilities: KnownVulnerabilities | None = None,
        snapshot: Callable[[], object] | None = None,
        tick: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.lease = FleetLease(engine, LEASE_NAME)
        self._reevaluate = reevaluate
        self._prune = prune
        self._snapshot = snapshot
        self._next_snapshot = time.monotonic()
        self._tick = tick
        # the policy the hosts were last evaluated against, as far as this process knows
        self.evaluated_digest = policy.current.digest
        self.vulnerabilities = vulnerabilities
        self.evaluated_generation = self.generation
        # whether hosts may have been evaluated against something else than what is in force:
        # so at first (a change may have come while no collector ran), and after a pass
        self._check_due = True
        self._next_prune = time.monotonic() + FIRST_PRUNE_AFTER
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._stop.clear()
        self.lease.release()
        self._holding = False

    def _run(self) -> None:
        while not self._stop.wait(self.settings.policy_check_interval):
            try:
                self.round()
            except Exception as exc:  # noqa: BLE001  (housekeeping must outlive a bad moment)
                log.error("housekeeping failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def round(self) -> None:
        """Follow the policy file and the vulnerability data; if this process holds the lease,
        do the fleet's work."""
        self.follow_policy()
        self.follow_vulnerabilities()
        holding = self.lease.held()
        if holding != self._holding:
            self._holding = holding
            if holding:
                log.info("this process now does the fleet's housekeeping")
                self._check_due = True
        if not holding:
            return
        if self._tick is not None:
            # before evaluating again, so that a new policy's waivers are in force for it
            self._tick()
        if self.vulnerability_fetch_due():
            self.fetch_vulnerabilities()
        changed = (self.policy.current.digest, self.generation) != (
            self.evaluated_digest,
            self.evaluated_generation,
        )
        if (changed or self._check_due) and (self.reevaluate() or changed):
            self._next_snapshot = time.monotonic()  # place the hosts by the new policy now
        if time.monotonic() >= self._next_prune:
            self.prune()
            self._next_prune = time.monotonic() + PRUNE_EVERY
        if self._snapshot is not None and time.monotonic() >= self._next_snapshot:
            self._snapshot()
            self._next_snapshot = time.monotonic() + self.settings.dashboard_snapshot_seconds

    def follow_policy(self) -> bool:
        """Load the policy file again if it changed; True when a new policy is in force."""
        changed = self.policy.reload_if_changed()
        if not changed and self.policy.error:
            log.error(
                "policy file not loaded; the previous policy stays in force",
                error=self.policy.error,
            )
        return changed

    @property
    def generation(self) -> str:
        """The vulnerability data this process holds."""
        return self.vulnerabilities.index.generation if self.vulnerabilities else ""

    def follow_vulnerabilities(self) -> bool:
        """Load the vulnerability data again if what is stored changed; True when it did."""
        if self.vulnerabilities is None:
            return False
        changed = self.vulnerabilities.refresh()
        if changed:
            log.info("vulnerability data loaded", generation=self.generation[:12])
        return changed

    def vulnerability_fetch_due(self) -> bool:
        """Whether the configured URLs were last imported longer ago than the refresh period."""
        urls = self.settings.vulnerability_urls
        if self.vulnerabilities is None or not urls:
            return False
        source = ", ".join(urls)
        fetched = [i.imported_at for i in self.vulnerabilities.status() if i.source == source]
        period = timedelta(hours=self.settings.vulnerability_refresh_hours)
        return not fetched or datetime.now(UTC) - min(fetched) >= period

    def fetch_vulnerabilities(self) -> bool:
        """Fetch and import the configured URLs now; False (and logged) when that failed."""
        assert self.vulnerabilities is not None  # due only with vulnerability data
        try:
            infos = refresh_from(
                self.vulnerabilities,
                self.settings.vulnerability_urls,
                self.settings.vulnerability_max_bytes,
            )
        except DataFormatError as exc:
            log.error("vulnerability data not refreshed; the data held stays", error=str(exc))
            return False
        log.info("vulnerability data fetched", datasets=[i.name for i in infos])
        self.follow_vulnerabilities()
        return True

    def reevaluate(self) -> int:
        """Evaluate the hosts last evaluated against another policy or vulnerability data than
        those in force now; return how many."""
        digest = self.policy.current.digest
        generation = self.generation
        changed = (digest, generation) != (self.evaluated_digest, self.evaluated_generation)
        started = time.monotonic()
        count = self._reevaluate()
        self.evaluated_digest = digest
        self.evaluated_generation = generation
        self._check_due = count > 0
        if not count and not changed:
            return 0
        log.info(
            "hosts evaluated again against the policy and vulnerability data in force",
            hosts=count,
            digest=digest[:12],
            vulnerability_data=generation[:12],
            seconds=round(time.monotonic() - started, 2),
        )
        return count

    def prune(self) -> tuple[int, int]:
        """Delete reports and contents past retention; (reports, contents) deleted."""
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.report_retention_days)
        reports, contents = self._prune(cutoff)
        if reports or contents:
            log.info("pruned old reports", reports=reports, contents=contents)
        return reports, contents
