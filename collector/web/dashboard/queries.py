"""What each dashboard page shows, read for one reader: every read is limited to the reader's
unit (`Principal.unit`) before anything is counted, listed or drawn.

Counts come from the housekeeper's live snapshot while it is fresh (``dashboard_live_max_age``)
and are counted on the spot otherwise; lists come from `storage.fleet_view`, a page at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.compliance.placement import default_age
from fleetwatch.collector.storage.fleet_view import (
    SEVERITIES,
    FindingFilter,
    FindingLine,
    FleetView,
    HostFilter,
    HostPage,
    HostSort,
    Scope,
    UnitCounts,
)
from fleetwatch.collector.storage.host_vulnerabilities import VulnerabilityFilter
from fleetwatch.collector.web.dashboard.charts import Chart, line_chart

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Principal
    from fleetwatch.collector.service import CollectorService
    from fleetwatch.collector.storage.events import EventRow
    from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerability
    from fleetwatch.collector.storage.hosts import HostRow
    from fleetwatch.collector.storage.reports import ReportRow
    from fleetwatch.collector.storage.snapshots import Kind

UNIT_SORTS = ("unit", "hosts", "noncompliant", "stale", "never_reported", "overdue", *SEVERITIES)
TREND_DAYS = (7, 30, 90)
TOP_RULES = 10
REPORTS_SHOWN = 10
VULNERABILITIES_SHOWN = 500


def scope_of(principal: Principal) -> Scope:
    return Scope(unit=principal.unit)


@dataclass
class Overview:
    taken_at: datetime
    units: list[UnitCounts]
    total: UnitCounts
    top_rules: list[tuple[str, int]]
    charts: list[Chart]
    days: int


def _total(units: list[UnitCounts]) -> UnitCounts:
    total = UnitCounts(unit="all units")
    for u in units:
        total.hosts += u.hosts
        total.overdue += u.overdue
        for name, bucket in (
            ("by_status", u.by_status),
            ("open_by_severity", u.open_by_severity),
            ("open_by_rule", u.open_by_rule),
        ):
            into: dict[str, int] = getattr(total, name)
            for key, count in bucket.items():
                into[key] = into.get(key, 0) + count
    return total


def unit_sort_key(sort: str) -> Any:
    if sort == "unit":
        return lambda u: u.unit
    if sort == "hosts":
        return lambda u: u.hosts
    if sort == "overdue":
        return lambda u: u.overdue
    if sort in SEVERITIES:
        return lambda u: u.open_by_severity.get(sort, 0)
    return lambda u: u.by_status.get(sort, 0)


def current_counts(svc: CollectorService, scope: Scope) -> tuple[datetime, list[UnitCounts]]:
    """Each unit's counts now: the housekeeper's live snapshot if fresh, else counted here."""
    now = datetime.now(UTC)
    max_age = svc.settings.dashboard_live_max_age
    with svc.store.read() as conn:
        if max_age > 0:
            live = svc.store.snapshots.series(
                conn, "live", now - timedelta(seconds=max_age), scope.unit
            )
            if live:
                # overdue findings are not in the snapshots: counted now (one aggregate over
                # the open findings), since a due date passes without a report
                units = live[-1].units
                overdue = FleetView(conn, default_age(svc.policy.current), now).overdue_by_unit(
                    scope
                )
                for u in units:
                    u.overdue = overdue.get(u.unit, 0)
                return live[-1].taken_at, units
        return now, FleetView(conn, default_age(svc.policy.current), now).unit_counts(scope)


def overview(
    svc: CollectorService,
    principal: Principal,
    *,
    unit: str | None,
    sort: str,
    desc: bool,
    days: int,
) -> Overview:
    scope = scope_of(principal)
    taken_at, units = current_counts(svc, scope)
    units = sorted(units, key=unit_sort_key(sort), reverse=desc)
    total = _total(units)
    top = sorted(total.open_by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_RULES]
    trend_unit = scope.unit if scope.unit is not None else unit
    return Overview(taken_at, units, total, top, trends(svc, trend_unit, days, taken_at), days)


def trends(svc: CollectorService, unit: str | None, days: int, now: datetime) -> list[Chart]:
    """Compliance rate and open findings by severity over ``days``: hourly snapshots for a week,
    daily ones beyond; of one unit, or of the whole fleet."""
    kind: Kind = "hour" if days <= 7 else "day"  # hourly snapshots are kept a week
    with svc.store.read() as conn:
        series = svc.store.snapshots.totals(conn, kind, now - timedelta(days=days), unit)
    moments = [s.taken_at for s in series]
    totals = [_total(s.units) for s in series]
    rate = [
        round(100 * t.by_status.get("compliant", 0) / t.hosts, 1) if t.hosts else 0.0
        for t in totals
    ]
    label = f"unit {unit}" if unit is not None else "all units"
    return [
        line_chart(
            f"Compliant hosts, % ({label})", moments, {"compliant": rate}, y_max=100, unit="%"
        ),
        line_chart(
            f"Open findings by severity ({label})",
            moments,
            {s: [float(t.open_by_severity.get(s, 0)) for t in totals] for s in SEVERITIES},
        ),
    ]


def units_of(svc: CollectorService, principal: Principal) -> list[str]:
    """The units a reader may pick in a filter."""
    if principal.unit is not None:
        return [principal.unit]
    with svc.store.read() as conn:
        # the live snapshot's units (95 rows) rather than a pass over every host's placement
        return svc.store.snapshots.units(conn) or svc.store.placements.units(conn)


def host_page(
    svc: CollectorService,
    principal: Principal,
    wanted: HostFilter,
    *,
    sort: HostSort,
    desc: bool,
    after: tuple[str, str] | None,
    limit: int = 50,
) -> HostPage:
    policy = svc.policy.current
    with svc.store.read() as conn:
        page = FleetView(conn, default_age(policy)).host_page(
            scope_of(principal), wanted, sort=sort, descending=desc, after=after, limit=limit
        )
    # The placements follow the policy at the housekeeper's next round: until then, a host
    # the new policy moved out of the reader's unit is left out here as on the host page.
    lines = [h for h in page.lines if principal.may_see(policy.for_host(h.host_id).unit or h.unit)]
    return HostPage(lines, page.next_after)


@dataclass
class UpdateGroup:
    source: str
    updates: list[dict[str, Any]]

    @property
    def security(self) -> bool:
        return any(u.get("security") for u in self.updates)


@dataclass
class HostView:
    host_id: str
    unit: str | None
    groups: tuple[str, ...]
    host: HostRow | None
    sections: dict[str, Any]
    section_errors: dict[str, str]
    open_findings: list[FindingLine]
    history: list[FindingLine]
    reports: list[ReportRow]
    updates: list[UpdateGroup] = field(default_factory=list)
    # from the vulnerability data, when loaded: exploited first, then fixable, then by CVSS
    vulnerabilities: list[HostVulnerability] = field(default_factory=list)


def _updates_by_source(sections: dict[str, Any]) -> list[UpdateGroup]:
    """Pending updates grouped by the source package of each binary package."""
    source_of = {
        row[0]: row[3]
        for row in (sections.get("packages") or {}).get("packages", [])
        if len(row) > 3
    }
    groups: dict[str, list[dict[str, Any]]] = {}
    for update in (sections.get("updates") or {}).get("updates", []):
        name = update.get("name", "")
        groups.setdefault(source_of.get(name) or name, []).append(update)
    ordered = sorted(
        groups.items(), key=lambda kv: (not any(u.get("security") for u in kv[1]), kv[0])
    )
    return [UpdateGroup(source, updates) for source, updates in ordered]


def host_view(svc: CollectorService, principal: Principal, host_id: str) -> HostView | None:
    """A host as its page shows it; None if it does not exist or the reader may not see it."""
    policy = svc.policy.current
    resolved = policy.for_host(host_id)
    with svc.store.read() as conn:
        host = svc.store.hosts.get(conn, host_id)
        if host is None and not resolved.listed:
            return None
        unit = resolved.unit or (host.unit if host else None)
        if not principal.may_see(unit):
            return None
        sections: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, state in (host.sections if host else {}).items():
            if state.hash:
                payload = svc.store.blobs.get(conn, state.hash)
                sections[name] = json.loads(payload) if payload else None
            if state.error or state.missing:
                errors[name] = state.error or state.missing or ""
        view = FleetView(conn, default_age(policy))
        wanted = FindingFilter(host_id=host_id, state="unresolved")
        open_findings, _ = view.finding_page(Scope(), wanted, limit=500)
        history, _ = view.finding_page(
            Scope(), FindingFilter(host_id=host_id, state="resolved"), limit=50
        )
        reports = svc.store.reports.of_host(conn, host_id, REPORTS_SHOWN, None) if host else []
        vulnerabilities = svc.store.host_vulnerabilities.page(
            conn, VulnerabilityFilter(host_id=host_id), limit=VULNERABILITIES_SHOWN
        ).rows
    vulnerabilities.sort(key=lambda v: (not v.exploited, not v.fixable, -(v.cvss or 0), v.vuln))
    return HostView(
        host_id=host_id,
        unit=unit,
        groups=resolved.groups,
        host=host,
        sections=sections,
        section_errors=errors,
        open_findings=open_findings,
        history=history,
        reports=reports,
        updates=_updates_by_source(sections),
        vulnerabilities=vulnerabilities,
    )


@dataclass
class FindingView:
    line: FindingLine
    events: list[EventRow]
    now: datetime


def finding_view(
    svc: CollectorService, principal: Principal, finding_id: int
) -> FindingView | None:
    """A finding and its history (its events, oldest first); None if it does not exist or
    the reader may not see its host."""
    now = datetime.now(UTC)
    with svc.store.read() as conn:
        lines, _ = FleetView(conn, default_age(svc.policy.current), now).finding_page(
            scope_of(principal), FindingFilter(finding_id=finding_id, state="all"), limit=1
        )
        if not lines:
            return None
        events = svc.store.events.for_finding(conn, finding_id)
    return FindingView(lines[0], events, now)


def finding_page(
    svc: CollectorService, principal: Principal, wanted: FindingFilter, before: int | None
) -> tuple[list[FindingLine], int | None]:
    with svc.store.read() as conn:
        return FleetView(conn, default_age(svc.policy.current)).finding_page(
            scope_of(principal), wanted, before=before
        )
