"""Feeding back: a unit's rectification report for a period, and the office's summary across
units. What the loop's last step hands to the units and to the office: what is open, how
old and when due, what is overdue, what was fixed and verified, what is waived and until
when; across units, who has the most overdue critical findings, and how each moved against
the previous period of the same length.

The reports are data (pydantic models); `web.feedback` renders them as CSV and HTML.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fleetwatch.collector.compliance.rules import SEVERITIES
from fleetwatch.collector.refusals import NoSuchUnit

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.storage.waivers import WaiverRow

# most severe first, for tables and rankings
SEVERITY_ORDER = tuple(reversed(SEVERITIES))


class HostLine(BaseModel):
    host_id: str
    last_report_at: datetime | None
    open_findings: int
    overdue_findings: int


class FindingLine(BaseModel):
    id: int
    host_id: str
    rule: str
    subject: str
    severity: str
    state: str
    detail: str
    first_seen: datetime
    age_days: float
    due_at: datetime | None
    overdue: bool
    acknowledged_by: str | None
    note: str | None
    resolved_at: datetime | None
    verified_at: datetime | None
    waiver_id: int | None


class WaiverLine(BaseModel):
    id: int
    scope: str
    target: str
    rule: str
    pattern: str
    reason: str
    owner: str
    expires_at: datetime
    expiring: bool  # within the policy's warning period
    findings: int  # open findings it excuses now


class UnitReport(BaseModel):
    """One unit's rectification report for [since, until)."""

    unit: str
    title: str
    emails: list[str]
    since: datetime
    until: datetime
    hosts: list[HostLine]
    open_by_severity: dict[str, int]
    open: list[FindingLine]  # not waived, most severe and oldest first
    overdue: list[FindingLine]
    fixed: list[FindingLine]  # resolved in the period (and maybe verified since)
    verified: list[FindingLine]  # verified in the period
    waived: list[FindingLine]
    waivers: list[WaiverLine]


class UnitLine(BaseModel):
    unit: str
    title: str
    hosts: int
    open: int
    overdue: int
    overdue_critical: int
    waived: int
    opened: int
    fixed: int
    verified: int
    previous_opened: int
    previous_fixed: int
    previous_verified: int
    open_at_start: int  # open when the period began: the trend of the backlog


class FleetSummary(BaseModel):
    """Every unit for [since, until), ranked by overdue critical findings, then overdue."""

    since: datetime
    until: datetime
    units: list[UnitLine]


def _line(row: FindingRow, now: datetime) -> FindingLine:
    return FindingLine(
        id=row.id,
        host_id=row.host_id,
        rule=row.rule,
        subject=row.key,
        severity=row.severity,
        state=row.state,
        detail=row.detail,
        first_seen=row.first_seen,
        age_days=round((now - row.first_seen).total_seconds() / 86400, 1),
        due_at=row.due_at,
        overdue=row.is_overdue(now),
        acknowledged_by=row.acknowledged_by,
        note=row.note,
        resolved_at=row.resolved_at,
        verified_at=row.verified_at,
        waiver_id=row.waiver_id,
    )


def _worst_first(lines: list[FindingLine]) -> list[FindingLine]:
    rank: dict[str, int] = {severity: i for i, severity in enumerate(SEVERITY_ORDER)}
    return sorted(lines, key=lambda f: (rank.get(f.severity, 99), f.first_seen, f.id))


class Feedback:
    """Builds the reports from the store and the policy in force."""

    def __init__(self, store: Store, policy: Policy) -> None:
        self.store = store
        self.policy = policy

    def _unit_hosts(self, conn: Connection) -> dict[str, str | None]:
        enrolled = {h.host_id: h for h in self.store.hosts.all(conn)}
        self._enrolled = enrolled
        hosts = set(enrolled) | set(self.policy.hosts)
        return {
            h: self.policy.for_host(h).unit or (enrolled[h].unit if h in enrolled else None)
            for h in hosts
        }

    def unit(self, name: str, since: datetime, until: datetime) -> UnitReport:
        """A unit's report for [since, until); ``until`` is also the moment ages and overdue
        are reckoned at."""
        with self.store.read() as conn:
            unit_of = self._unit_hosts(conn)
            hosts = sorted(h for h, u in unit_of.items() if u == name)
            if not hosts and name not in self.policy.units:
                raise NoSuchUnit(f"no unit {name!r}")
            open_rows = self.store.findings.open_where(conn, host_ids=hosts)
            moved = self.store.events.query(
                conn, unit=name, since=since, until=until, limit=1_000_000
            )
            ids = {
                e.finding_id
                for e in moved
                if e.kind in {"resolved", "verified"} and e.finding_id is not None
            }
            closed = {r.id: r for r in self.store.findings.get_many(conn, ids)}
            waivers = self.store.waivers.in_force(conn, until)
        resolved_ids = {e.finding_id for e in moved if e.kind == "resolved"}
        verified_ids = {e.finding_id for e in moved if e.kind == "verified"}
        lines = [_line(r, until) for r in open_rows]
        active = _worst_first([f for f in lines if f.waiver_id is None])
        unit = self.policy.units.get(name)
        return UnitReport(
            unit=name,
            title=unit.title if unit else name,
            emails=list(unit.emails) if unit else [],
            since=since,
            until=until,
            hosts=[self._host_line(h, lines) for h in hosts],
            open_by_severity={
                s: sum(1 for f in active if f.severity == s)
                for s in SEVERITY_ORDER
                if any(f.severity == s for f in active)
            },
            open=active,
            overdue=[f for f in active if f.overdue],
            fixed=_worst_first([_line(closed[i], until) for i in resolved_ids if i in closed]),
            verified=_worst_first([_line(closed[i], until) for i in verified_ids if i in closed]),
            waived=_worst_first([f for f in lines if f.waiver_id is not None]),
            waivers=self._waivers(waivers, name, hosts, open_rows, until),
        )

    def _host_line(self, host_id: str, lines: list[FindingLine]) -> HostLine:
        row = self._enrolled.get(host_id)
        mine = [f for f in lines if f.host_id == host_id and f.waiver_id is None]
        return HostLine(
            host_id=host_id,
            last_report_at=row.observed_at if row else None,
            open_findings=len(mine),
            overdue_findings=sum(1 for f in mine if f.overdue),
        )

    def _waivers(
        self,
        waivers: list[WaiverRow],
        unit: str,
        hosts: list[str],
        open_rows: list[FindingRow],
        now: datetime,
    ) -> list[WaiverLine]:
        """The waivers in force for the unit, any of its hosts, or a group one of them is in."""
        warning = timedelta(days=self.policy.response.response.waiver_warning_days)
        groups = {g for h in hosts for g in self.policy.for_host(h).groups}
        reaching = [
            w
            for w in waivers
            if (w.scope == "unit" and w.target == unit)
            or (w.scope == "host" and w.target in hosts)
            or (w.scope == "group" and w.target in groups)
        ]
        lines = [
            WaiverLine(
                id=waiver.id,
                scope=waiver.scope,
                target=waiver.target,
                rule=waiver.rule,
                pattern=waiver.pattern,
                reason=waiver.reason,
                owner=waiver.owner,
                expires_at=waiver.expires_at,
                expiring=waiver.expires_at <= now + warning,
                findings=sum(1 for r in open_rows if r.waiver_id == waiver.id),
            )
            for waiver in reaching
        ]
        return sorted(lines, key=lambda w: (w.expires_at, w.id))

    def fleet(self, since: datetime, until: datetime) -> FleetSummary:
        """Every unit's counts for [since, until) and the period of the same length before."""
        previous = since - (until - since)
        kinds = ("opened", "resolved", "verified")
        with self.store.read() as conn:
            unit_of = self._unit_hosts(conn)
            open_rows = self.store.findings.open_where(conn)
            now_counts = self.store.events.counts(conn, kinds, since, until)
            before_counts = self.store.events.counts(conn, kinds, previous, since)
            at_start = self.store.findings.open_since(conn, since)
        names = sorted(set(self.policy.units) | {u for u in unit_of.values() if u})
        lines = []
        for name in names:
            rows = [r for r in open_rows if unit_of.get(r.host_id) == name]
            active = [r for r in rows if r.waiver_id is None]
            overdue = [r for r in active if r.is_overdue(until)]
            unit = self.policy.units.get(name)
            lines.append(
                UnitLine(
                    unit=name,
                    title=unit.title if unit else name,
                    hosts=sum(1 for u in unit_of.values() if u == name),
                    open=len(active),
                    overdue=len(overdue),
                    overdue_critical=sum(1 for r in overdue if r.severity == "critical"),
                    waived=len(rows) - len(active),
                    opened=now_counts.get((name, "opened"), 0),
                    fixed=now_counts.get((name, "resolved"), 0),
                    verified=now_counts.get((name, "verified"), 0),
                    previous_opened=before_counts.get((name, "opened"), 0),
                    previous_fixed=before_counts.get((name, "resolved"), 0),
                    previous_verified=before_counts.get((name, "verified"), 0),
                    open_at_start=sum(c for h, _, c in at_start if unit_of.get(h) == name),
                )
            )
        lines.sort(key=lambda u: (-u.overdue_critical, -u.overdue, -u.open, u.unit))
        return FleetSummary(since=since, until=until, units=lines)
