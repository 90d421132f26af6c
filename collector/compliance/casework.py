"""Casework: what people do to findings (acknowledge, set a due date, waive) and what time
does to them (overdue, verified, waivers expiring and expired), and to hosts (silent ones:
`compliance.watch`).

Each change is made in one transaction with the events it writes (`compliance.lifecycle`
builds them). Time-driven changes are made by `Casework.tick`, which the housekeeper runs
once per fleet: each is announced once (the finding or waiver remembers when).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fleetwatch.collector.compliance import lifecycle
from fleetwatch.collector.compliance.findings import covering_waiver
from fleetwatch.collector.compliance.rules import REGISTRY
from fleetwatch.collector.compliance.watch import HostWatch
from fleetwatch.collector.refusals import (
    FindingClosed,
    InvalidWaiver,
    NoSuchFinding,
    NoSuchWaiver,
    WaiverNotInForce,
)
from fleetwatch.collector.storage.events import COLLECTOR
from fleetwatch.collector.storage.waivers import NewWaiver

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Connection

    from fleetwatch.collector.compliance.policy import Policy, PolicySource
    from fleetwatch.collector.compliance.response import WaiverEntry
    from fleetwatch.collector.storage.events import NewEvent
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.storage.waivers import WaiverRow

# who ends a policy waiver that left the file
POLICY_ACTOR = "policy"


@dataclasses.dataclass
class TickCounts:
    """What one round of time-driven casework changed."""

    overdue: int = 0
    verified: int = 0
    waivers_expiring: int = 0
    waivers_expired: int = 0
    policy_waivers_created: int = 0
    policy_waivers_revoked: int = 0
    host_events: int = 0


class Casework:
    """Changes to findings and waivers that do not come from a report."""

    def __init__(self, store: Store, policy: PolicySource) -> None:
        self.store = store
        self.policy = policy
        self.watch = HostWatch()

    # -- who answers for what ----------------------------------------------------------

    def units_of(self, conn: Connection, host_ids: Iterable[str]) -> dict[str, str | None]:
        """Each host's unit: the policy's, else the one it enrolled into."""
        policy = self.policy.current
        wanted = set(host_ids)
        units: dict[str, str | None] = {h: policy.for_host(h).unit for h in wanted}
        missing = [h for h, unit in units.items() if unit is None]
        for host_id, row in self.store.hosts.get_many(conn, missing).items():
            units[host_id] = row.unit
        return units

    def finding(self, conn: Connection, finding_id: int, unit: str | None) -> FindingRow:
        """A finding, as a caller limited to ``unit`` (None: the fleet) may see it."""
        row = self.store.findings.get(conn, finding_id, lock=True)
        if row is None or (
            unit is not None and self.units_of(conn, [row.host_id])[row.host_id] != unit
        ):
            raise NoSuchFinding(f"no finding {finding_id}")
        return row

    # -- people -------------------------------------------------------------------------

    def acknowledge(
        self,
        finding_id: int,
        actor: str,
        note: str | None,
        due_at: datetime | None,
        *,
        unit: str | None = None,
        now: datetime | None = None,
    ) -> FindingRow:
        """Acknowledge an open finding (again, to change the note), perhaps with a due date."""
        now = now or datetime.now(UTC)
        with self.store.write() as conn:
            row = self.finding(conn, finding_id, unit)
            if not row.open:
                raise FindingClosed(f"finding {finding_id} is {row.state}: nothing to acknowledge")
            after = lifecycle.acknowledge(row, actor, now, note, due_at)
            host_unit = self.units_of(conn, [row.host_id])[row.host_id]
            events = [
                lifecycle.finding_event("acknowledged", after, host_unit, now, actor, note=note)
            ]
            if after.due_at != row.due_at:
                events.append(
                    lifecycle.finding_event(
                        "due_changed", after, host_unit, now, actor, previous_due_at=row.due_at
                    )
                )
            self.store.findings.save(conn, [after])
            self.store.events.append(conn, events)
        return after

    def set_due(
        self,
        finding_id: int,
        actor: str,
        due_at: datetime | None,
        note: str | None = None,
        *,
        unit: str | None = None,
        now: datetime | None = None,
    ) -> FindingRow:
        """Give an open finding a new due date (None: none)."""
        now = now or datetime.now(UTC)
        with self.store.write() as conn:
            row = self.finding(conn, finding_id, unit)
            if not row.open:
                raise FindingClosed(f"finding {finding_id} is {row.state}: no due date to set")
            after = lifecycle.set_due(row, due_at)
            host_unit = self.units_of(conn, [row.host_id])[row.host_id]
            self.store.findings.save(conn, [after])
            self.store.events.append(
                conn,
                [
                    lifecycle.finding_event(
                        "due_changed",
                        after,
                        host_unit,
                        now,
                        actor,
                        previous_due_at=row.due_at,
                        note=note,
                    )
                ],
            )
        return after

    def create_waiver(self, new: NewWaiver) -> tuple[WaiverRow, int]:
        """Record a waiver and waive the open findings it covers; (waiver, findings waived)."""
        self._check(new, self.policy.current)
        with self.store.write() as conn:
            waiver, events, count = self._create(conn, new)
            self.store.events.append(conn, events)
        return waiver, count

    def revoke_waiver(
        self, waiver_id: int, actor: str, reason: str | None, now: datetime | None = None
    ) -> tuple[WaiverRow, int]:
        """End a waiver now; (the waiver, findings no longer waived by it)."""
        now = now or datetime.now(UTC)
        with self.store.write() as conn:
            waiver = self.store.waivers.get(conn, waiver_id)
            if waiver is None:
                raise NoSuchWaiver(f"no waiver {waiver_id}")
            if not waiver.is_in_force(now):
                raise WaiverNotInForce(f"waiver {waiver_id} is already revoked or expired")
            events, count = self._end(conn, waiver, "waiver_revoked", actor, now, reason=reason)
            self.store.events.append(conn, events)
        return dataclasses.replace(waiver, revoked_at=now, revoked_by=actor), count

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickCounts:
        """Once per fleet: follow the policy's waivers, then announce what time changed."""
        now = now or datetime.now(UTC)
        policy = self.policy.current
        counts = TickCounts()
        with self.store.write() as conn:
            events: list[NewEvent] = []
            events += self._sync_policy_waivers(conn, policy, now, counts)
            warning = timedelta(days=policy.response.response.waiver_warning_days)
            expiring = self.store.waivers.expiring(conn, now, now + warning)
            for waiver in expiring:
                self.store.waivers.set(conn, waiver.id, expiring_announced_at=now)
                events.append(
                    lifecycle.waiver_event(
                        "waiver_expiring", waiver, self.waiver_unit(conn, waiver), now
                    )
                )
            counts.waivers_expiring = len(expiring)
            for waiver in self.store.waivers.expired(conn, now):
                ended, _ = self._end(conn, waiver, "waiver_expired", COLLECTOR, now)
                events += ended
                counts.waivers_expired += 1
            events += self._verify_by_time(conn, policy, now, counts)
            overdue = self.store.findings.newly_overdue(conn, now)
            overdue = [dataclasses.replace(row, overdue_at=now) for row in overdue]
            self.store.findings.save(conn, overdue)
            units = self.units_of(conn, {row.host_id for row in overdue})
            events += [
                lifecycle.finding_event("overdue", row, units[row.host_id], now) for row in overdue
            ]
            counts.overdue = len(overdue)
            watched = self.watch.round(conn, self.store, policy, now)
            counts.host_events = len(watched)
            events += watched
            self.store.events.append(conn, events)
        return counts

    def _verify_by_time(
        self, conn: Connection, policy: Policy, now: datetime, counts: TickCounts
    ) -> list[NewEvent]:
        verification = policy.response.verification
        if not verification.hours:
            return []
        held = self.store.findings.resolved_since(conn, now - timedelta(hours=verification.hours))
        verified = [dataclasses.replace(r, state="verified", verified_at=now) for r in held]
        self.store.findings.save(conn, verified)
        units = self.units_of(conn, {row.host_id for row in verified})
        counts.verified = len(verified)
        return [
            lifecycle.finding_event("verified", row, units[row.host_id], now) for row in verified
        ]

    # -- waivers and the findings they cover ----------------------------------------------

    @staticmethod
    def _check(new: NewWaiver, policy: Policy) -> None:
        if new.rule not in REGISTRY:
            msg = f"no rule {new.rule!r}; rules: {', '.join(REGISTRY.ids())}"
            raise InvalidWaiver(msg)
        if new.scope == "group" and new.target not in policy.groups:
            raise InvalidWaiver(f"no group {new.target!r} in the policy")
        if new.expires_at <= new.created_at:
            raise InvalidWaiver("a waiver must expire in the future")

    def waiver_unit(self, conn: Connection, waiver: WaiverRow) -> str | None:
        """The unit a waiver concerns (None for a group's, which may span units)."""
        if waiver.scope == "unit":
            return waiver.target
        if waiver.scope == "host":
            return self.units_of(conn, [waiver.target])[waiver.target]
        return None

    def _create(self, conn: Connection, new: NewWaiver) -> tuple[WaiverRow, list[NewEvent], int]:
        waiver = self.store.waivers.add(conn, new)
        events = [
            lifecycle.waiver_event(
                "waiver_created",
                waiver,
                self.waiver_unit(conn, waiver),
                new.created_at,
                new.created_by,
            )
        ]
        rows = self.store.findings.open_where(conn, rule=new.rule)
        rewaived, count = self._rewaive(conn, rows, new.created_at, new.created_by)
        return waiver, events + rewaived, count

    def _end(
        self,
        conn: Connection,
        waiver: WaiverRow,
        kind: str,
        actor: str,
        now: datetime,
        reason: str | None = None,
    ) -> tuple[list[NewEvent], int]:
        if kind == "waiver_expired":
            self.store.waivers.set(conn, waiver.id, expired_announced_at=now)
        else:
            self.store.waivers.set(conn, waiver.id, revoked_at=now, revoked_by=actor)
        detail = {"reason_ended": reason} if reason else {}
        events = [
            lifecycle.waiver_event(
                kind, waiver, self.waiver_unit(conn, waiver), now, actor, **detail
            )
        ]
        rows = self.store.findings.open_where(conn, waiver_id=waiver.id)
        rewaived, count = self._rewaive(conn, rows, now, actor)
        return events + rewaived, count

    def _rewaive(
        self, conn: Connection, rows: list[FindingRow], now: datetime, actor: str
    ) -> tuple[list[NewEvent], int]:
        """Give these open findings the waiver in force that covers them now, if any."""
        policy = self.policy.current
        waivers = self.store.waivers.in_force(conn, now)
        changed = []
        for row in rows:
            waiver_id = covering_waiver(waivers, policy.for_host(row.host_id), row.rule, row.key)
            if waiver_id != row.waiver_id:
                changed.append((row, lifecycle.waive(row, waiver_id)))
        self.store.findings.save(conn, [after for _, after in changed])
        units = self.units_of(conn, {row.host_id for row, _ in changed})
        events = [
            lifecycle.finding_event(
                "waived" if after.waiver_id is not None else "unwaived",
                after,
                units[after.host_id],
                now,
                actor,
                previous_waiver_id=before.waiver_id,
            )
            for before, after in changed
        ]
        return events, len(changed)

    def _sync_policy_waivers(
        self, conn: Connection, policy: Policy, now: datetime, counts: TickCounts
    ) -> list[NewEvent]:
        """Keep the policy file's waivers in the table: a new or changed entry is recorded,
        one that changed or left the file is revoked (by ``policy``)."""
        kept: set[str] = set()
        events: list[NewEvent] = []
        for name, row in self.store.waivers.of_policy(conn).items():
            entry = policy.waivers.get(name)
            if entry is not None and _from_entry(name, entry, row.created_at) == _as_new(row):
                kept.add(name)
                continue
            why = "changed in the policy" if entry else "removed from the policy"
            ended, _ = self._end(conn, row, "waiver_revoked", POLICY_ACTOR, now, reason=why)
            events += ended
            counts.policy_waivers_revoked += 1
        for name, entry in policy.waivers.items():
            if name not in kept:
                _, created, _ = self._create(conn, _from_entry(name, entry, now))
                events += created
                counts.policy_waivers_created += 1
        return events


def _from_entry(name: str, entry: WaiverEntry, now: datetime) -> NewWaiver:
    return NewWaiver(
        source="policy",
        name=name,
        scope=entry.scope,
        target=entry.target,
        rule=entry.rule,
        pattern=entry.subject,
        reason=entry.reason,
        owner=entry.owner,
        created_by=POLICY_ACTOR,
        created_at=now,
        expires_at=entry.expires_at,
    )


def _as_new(row: WaiverRow) -> NewWaiver:
    return NewWaiver(**{f.name: getattr(row, f.name) for f in dataclasses.fields(NewWaiver)})
