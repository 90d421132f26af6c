"""The fleet as the dashboard reads it: hosts with their status, counted, filtered, paged.

A host's status (never reported, stale, noncompliant, compliant) is worked out in SQL here,
as `web.views.status_of` does in Python for the API: from ``host_placements`` (the policy's
view of each host, `storage.placements`), the host's latest state in ``hosts`` and whether
it has an open finding. Nothing here reads the ``reports`` table: every count comes from
hosts, placements and open findings (through the partial index of open findings).

Paging is by keyset (the last row's sort value and host id), never by offset, so that the
last page of 100,000 hosts costs what the first one does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, case, func, literal, or_, select, tuple_

from fleetwatch.collector.storage.findings import FindingRow, shown_last_seen
from fleetwatch.collector.storage.fleet import counting
from fleetwatch.collector.storage.placements import report_ages
from fleetwatch.collector.storage.tables import (
    UTCDateTime,
    findings,
    host_placements,
    hosts,
    waivers,
)
from fleetwatch.collector.storage.tallies import hosts_by_status

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import ColumnElement, Connection, Select, Subquery

SEVERITIES = ("critical", "high", "medium", "low")
STATUSES = ("compliant", "noncompliant", "stale", "never_reported")
HostSort = Literal["host", "unit", "status", "last_report"]
# What the findings page filters on: open (counting: not waived), acknowledged (open),
# waived (open), overdue (counting, past due), resolved, all; ``unresolved``: every open one.
FindingState = Literal["open", "acknowledged", "waived", "overdue", "resolved", "all", "unresolved"]
FINDING_STATES = ("open", "acknowledged", "waived", "overdue", "resolved", "all")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scope:
    """What a reader may see: every unit (``unit`` None) or one."""

    unit: str | None = None


@dataclass(frozen=True)
class HostFilter:
    unit: str | None = None
    group: str | None = None
    status: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class HostLine:
    host_id: str
    unit: str | None
    groups: tuple[str, ...]
    status: str
    last_report_at: datetime | None
    agent_version: str | None
    open_by_severity: dict[str, int] = field(default_factory=dict)
    listed: bool = False  # the policy lists it
    enrolled: bool = False

    @property
    def open_findings(self) -> int:
        return sum(self.open_by_severity.values())


@dataclass(frozen=True)
class HostPage:
    lines: list[HostLine]
    next_after: tuple[str, str] | None  # (sort value, host id) of the last line, if more follow


@dataclass
class UnitCounts:
    """A unit's hosts by status and its open findings by severity and rule."""

    unit: str
    hosts: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    open_by_severity: dict[str, int] = field(default_factory=dict)
    open_by_rule: dict[str, int] = field(default_factory=dict)
    overdue: int = 0  # open findings past their due date, not waived


@dataclass(frozen=True)
class FindingFilter:
    unit: str | None = None
    rule: str | None = None
    severity: str | None = None
    state: FindingState = "open"
    older_than_days: int | None = None
    host_id: str | None = None
    finding_id: int | None = None


@dataclass(frozen=True)
class FindingLine:
    id: int
    host_id: str
    unit: str | None
    rule: str
    key: str
    severity: str
    detail: str
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    state: str = "open"
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str | None = None
    due_at: datetime | None = None
    overdue_at: datetime | None = None
    waiver_id: int | None = None
    waiver_reason: str | None = None
    waiver_owner: str | None = None
    waiver_expires_at: datetime | None = None
    overdue: bool = False  # open, not waived, past its due date (or announced overdue)


def overdue_condition(now: datetime) -> ColumnElement[bool]:
    """An open finding that counts and is past its due date, or was announced overdue (as
    `storage.fleet` counts them for /metrics)."""
    return and_(
        findings.c.resolved_at.is_(None),
        findings.c.waiver_id.is_(None),
        or_(findings.c.overdue_at.is_not(None), findings.c.due_at <= _moment(now)),
    )


def _observed() -> ColumnElement[Any]:
    """When the latest report's facts were true (`HostRow.observed_at`)."""
    return case(
        (hosts.c.last_collected_at < hosts.c.last_received_at, hosts.c.last_collected_at),
        else_=hosts.c.last_received_at,
    )


class FleetView:
    """The dashboard's reads; ``default_age`` is the report age of a host the policy does not
    list, ``now`` the moment statuses are worked out for."""

    def __init__(self, conn: Connection, default_age: float, now: datetime | None = None) -> None:
        self.conn = conn
        self.now = now or datetime.now(UTC)
        self.default_age = default_age

    # -- status ---------------------------------------------------------------------------

    def _cutoff(self) -> ColumnElement[Any]:
        """Before when a host's latest report makes it stale: per report age allowed."""
        ages = report_ages(self.conn)
        default = _moment(self.now - timedelta(seconds=self.default_age))
        if not ages:
            return default
        return case(
            *(
                (
                    host_placements.c.max_report_age == age,
                    _moment(self.now - timedelta(seconds=age)),
                )
                for age in ages
            ),
            else_=default,
        )

    @staticmethod
    def _has_open() -> ColumnElement[bool]:
        """The host has an open finding that counts, not waived (kept on its placement by
        triggers: `storage.tallies`)."""
        return host_placements.c.open_findings > 0

    def _status(self, cutoff: ColumnElement[Any]) -> ColumnElement[Any]:
        observed = _observed()
        return case(
            (hosts.c.host_id.is_(None), "never_reported"),
            (observed.is_(None), "never_reported"),
            (observed < cutoff, "stale"),
            (self._has_open(), "noncompliant"),
            else_="compliant",
        )

    def _status_is(self, status: str, cutoff: ColumnElement[Any]) -> ColumnElement[bool]:
        """The same statuses as `_status`, as a condition: stale and never reported hosts are
        found without probing the findings."""
        observed = _observed()
        if status == "never_reported":
            return observed.is_(None)  # also true when the host never enrolled (no row)
        if status == "stale":
            return observed < cutoff
        if status == "noncompliant":
            return (observed >= cutoff) & self._has_open()
        if status == "compliant":
            return (observed >= cutoff) & ~self._has_open()
        return literal(value=False)

    def _hosts(
        self, scope: Scope, status: str | None = None, *, reported: bool = False
    ) -> Select[Any]:
        """Every host a reader may see (of one status, if given), with its status, as a
        subquery's select."""
        cutoff = self._cutoff()
        query = select(
            host_placements.c.host_id,
            host_placements.c.unit,
            host_placements.c.groups,
            self._status(cutoff).label("status"),
            _observed().label("observed"),
            hosts.c.agent_version,
            host_placements.c.listed,
            host_placements.c.reported,
            hosts.c.host_id.is_not(None).label("enrolled"),
            hosts.c.host_id.label("row_id"),  # the same host id, from hosts: see _by_last_report
        ).select_from(
            # hosts that reported only: an inner join, which SQLite can drive from hosts
            host_placements.join(hosts, hosts.c.host_id == host_placements.c.host_id)
            if reported
            else host_placements.outerjoin(hosts, hosts.c.host_id == host_placements.c.host_id)
        )
        if scope.unit is not None:
            query = query.where(host_placements.c.unit == scope.unit)
        if status is not None:
            query = query.where(self._status_is(status, cutoff))
        return query

    # -- counts ---------------------------------------------------------------------------

    def unit_counts(self, scope: Scope) -> list[UnitCounts]:
        """Hosts by status (from the counts triggers keep: `storage.tallies`), open findings
        by severity and by rule, for each unit in scope."""
        by_unit: dict[str, UnitCounts] = {}

        def of(unit: str | None) -> UnitCounts:
            return by_unit.setdefault(unit or "", UnitCounts(unit or ""))

        for unit, hosts_of in hosts_by_status(
            self.conn, self.now, self.default_age, scope.unit
        ).items():
            counts = of(unit)
            counts.by_status = {k: v for k, v in hosts_of.by_status.items() if v}
            counts.hosts = hosts_of.hosts
        for column, target in ((findings.c.severity, "sev"), (findings.c.rule, "rule")):
            query = (
                select(host_placements.c.unit, column, func.count())
                .select_from(
                    findings.join(host_placements, host_placements.c.host_id == findings.c.host_id)
                )
                .where(*counting())
                .group_by(host_placements.c.unit, column)
            )
            if scope.unit is not None:
                query = query.where(host_placements.c.unit == scope.unit)
            for unit, value, count in self.conn.execute(query):
                bucket = of(unit).open_by_severity if target == "sev" else of(unit).open_by_rule
                bucket[value] = int(count)
        for unit, count in self.overdue_by_unit(scope).items():
            of(unit).overdue = count
        return sorted(by_unit.values(), key=lambda u: u.unit)

    def overdue_by_unit(self, scope: Scope) -> dict[str, int]:
        """Overdue findings of each unit in scope (one aggregate over the open findings)."""
        query = (
            select(host_placements.c.unit, func.count())
            .select_from(
                findings.join(host_placements, host_placements.c.host_id == findings.c.host_id)
            )
            .where(overdue_condition(self.now))
            .group_by(host_placements.c.unit)
        )
        if scope.unit is not None:
            query = query.where(host_placements.c.unit == scope.unit)
        return {unit or "": int(count) for unit, count in self.conn.execute(query)}

    # -- hosts ----------------------------------------------------------------------------

    def host_page(
        self,
        scope: Scope,
        wanted: HostFilter,
        *,
        sort: HostSort = "host",
        descending: bool = False,
        after: tuple[str, str] | None = None,
        limit: int = 50,
    ) -> HostPage:
        """One page of hosts, in order of ``sort`` then host id, after the keyset ``after``."""
        listed = self._hosts(scope, wanted.status).subquery()
        conditions = _wanted(listed, wanted)
        if sort == "last_report":
            rows = self._by_last_report(scope, wanted, descending, after, limit + 1)
        else:
            key = {
                "host": listed.c.host_id,
                "unit": func.coalesce(listed.c.unit, ""),
                "status": listed.c.status,
            }[sort]
            if after is not None and sort == "host":
                # the key is the host id itself: one comparison, which the index answers (the
                # pair (host id, host id) matches no index, and a page far in walked every
                # host before it)
                host_id = listed.c.host_id
                conditions.append(host_id < after[1] if descending else host_id > after[1])
            elif after is not None:
                position = tuple_(key, listed.c.host_id)
                cursor = tuple_(literal(after[0]), literal(after[1]))
                conditions.append(position < cursor if descending else position > cursor)
            order = (key.desc(), listed.c.host_id.desc()) if descending else (key, listed.c.host_id)
            query = select(listed, key.label("sort_key")).where(*conditions)
            rows = list(self.conn.execute(query.order_by(*order).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        counts = self.open_counts([r.host_id for r in rows])
        lines = [
            HostLine(
                host_id=r.host_id,
                unit=r.unit,
                groups=tuple(r.groups.split()),
                status=r.status,
                last_report_at=_aware(r.observed),
                agent_version=r.agent_version,
                open_by_severity=counts.get(r.host_id, {}),
                listed=bool(r.listed),
                enrolled=bool(r.enrolled),
            )
            for r in rows
        ]
        next_after = None
        if more and rows:
            last = rows[-1].sort_key
            text = _aware(last).isoformat() if sort == "last_report" else str(last)
            next_after = (text, rows[-1].host_id)
        return HostPage(lines, next_after)

    def _by_last_report(
        self,
        scope: Scope,
        wanted: HostFilter,
        descending: bool,
        after: tuple[str, str] | None,
        count: int,
    ) -> list[Any]:
        """Rows in order of last report (hosts that never reported as if at the epoch: first,
        or last when descending), read in two runs so that each walks an index: the hosts
        that never reported by host id, the others by the index of observed times."""
        epoch = _aware(EPOCH).isoformat()
        runs = ["never", "seen"]
        if descending:
            runs.reverse()
        at = None if after is None else runs.index("never" if after[0] == epoch else "seen")
        rows: list[Any] = []
        for index, run in enumerate(runs):
            if at is not None and index < at:
                continue  # wholly before the cursor
            listed = self._hosts(scope, wanted.status, reported=run == "seen").subquery()
            conditions = _wanted(listed, wanted)
            if run == "never":
                key: Any = literal(EPOCH, UTCDateTime())
                # kept by triggers as last_received_at is set: its index gives them in order
                where = [listed.c.reported == 0]
                position: Any = listed.c.host_id
                cursor: Any = None if after is None else literal(after[1])
                order: tuple[Any, ...] = (listed.c.host_id,)
            else:
                key = listed.c.observed
                # a condition on hosts' own column makes the outer join an inner one, and
                # the order (observed, hosts.host_id) that of the index ix_hosts_observed
                where = [listed.c.reported == 1, listed.c.row_id.is_not(None)]
                position = tuple_(listed.c.observed, listed.c.row_id)
                cursor = None
                if after is not None:
                    cursor = tuple_(_moment(datetime.fromisoformat(after[0])), literal(after[1]))
                order = (listed.c.observed, listed.c.row_id)
            if at == index and cursor is not None:
                where.append(position < cursor if descending else position > cursor)
            if descending:
                order = tuple(o.desc() for o in order)
            query = (
                select(listed, key.label("sort_key"))
                .where(*conditions, *where)
                .order_by(*order)
                .limit(count - len(rows))
            )
            rows += list(self.conn.execute(query))
            if len(rows) >= count:
                break
        return rows

    def open_counts(self, host_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """host -> severity -> open findings that count (not waived), for these hosts only."""
        if not host_ids:
            return {}
        counts: dict[str, dict[str, int]] = {}
        for host_id, severity, count in self.conn.execute(
            select(findings.c.host_id, findings.c.severity, func.count())
            .where(findings.c.host_id.in_(list(host_ids)), *counting())
            .group_by(findings.c.host_id, findings.c.severity)
        ):
            counts.setdefault(host_id, {})[severity] = int(count)
        return counts

    # -- findings -------------------------------------------------------------------------

    def finding_page(
        self, scope: Scope, wanted: FindingFilter, *, before: int | None = None, limit: int = 50
    ) -> tuple[list[FindingLine], int | None]:
        """Findings newest first (by id), before the id ``before``; and the id to page from."""
        query = select(
            findings.c.id,
            findings.c.host_id,
            host_placements.c.unit,
            findings.c.rule,
            findings.c.key,
            findings.c.severity,
            findings.c.detail,
            findings.c.first_seen,
            shown_last_seen().label("last_seen"),
            findings.c.resolved_at,
            findings.c.state,
            findings.c.acknowledged_by,
            findings.c.acknowledged_at,
            findings.c.note,
            findings.c.due_at,
            findings.c.overdue_at,
            findings.c.waiver_id,
            waivers.c.reason.label("waiver_reason"),
            waivers.c.owner.label("waiver_owner"),
            waivers.c.expires_at.label("waiver_expires_at"),
        ).select_from(
            findings.join(host_placements, host_placements.c.host_id == findings.c.host_id)
            .outerjoin(hosts, hosts.c.host_id == findings.c.host_id)
            .outerjoin(waivers, waivers.c.id == findings.c.waiver_id)
        )
        conditions: list[ColumnElement[bool]] = []
        if scope.unit is not None:
            conditions.append(host_placements.c.unit == scope.unit)
        if wanted.unit is not None:
            conditions.append(host_placements.c.unit == wanted.unit)
        if wanted.host_id is not None:
            conditions.append(findings.c.host_id == wanted.host_id)
        if wanted.finding_id is not None:
            conditions.append(findings.c.id == wanted.finding_id)
        if wanted.rule is not None:
            conditions.append(findings.c.rule == wanted.rule)
        if wanted.severity is not None:
            conditions.append(findings.c.severity == wanted.severity)
        conditions.extend(self._state_is(wanted.state))
        if wanted.older_than_days is not None:
            since = self.now - timedelta(days=wanted.older_than_days)
            conditions.append(findings.c.first_seen < since)
        if before is not None:
            conditions.append(findings.c.id < before)
        rows = list(
            self.conn.execute(
                query.where(*conditions).order_by(findings.c.id.desc()).limit(limit + 1)
            )
        )
        more = len(rows) > limit
        lines = [self._line(r._mapping) for r in rows[:limit]]
        return lines, (lines[-1].id if more and lines else None)

    def _state_is(self, state: FindingState) -> list[ColumnElement[bool]]:
        is_open = findings.c.resolved_at.is_(None)
        conditions: dict[str, list[ColumnElement[bool]]] = {
            "open": [is_open, findings.c.waiver_id.is_(None)],
            "acknowledged": [is_open, findings.c.state == "acknowledged"],
            "waived": [is_open, findings.c.waiver_id.is_not(None)],
            "overdue": [overdue_condition(self.now)],
            "resolved": [findings.c.resolved_at.is_not(None)],
            "unresolved": [is_open],
            "all": [],
        }
        return conditions[state]

    def _line(self, row: Any) -> FindingLine:
        line = FindingLine(**row)
        overdue = (
            line.resolved_at is None
            and line.waiver_id is None
            and (
                line.overdue_at is not None
                or (line.due_at is not None and _aware(line.due_at) <= self.now)
            )
        )
        return dataclasses.replace(line, overdue=overdue)


def _wanted(listed: Subquery, wanted: HostFilter) -> list[ColumnElement[bool]]:
    """A host filter's conditions on the columns of `FleetView._hosts`."""
    conditions: list[ColumnElement[bool]] = []
    if wanted.unit is not None:
        conditions.append(listed.c.unit == wanted.unit)
    if wanted.group:
        conditions.append(listed.c.groups.like(f"% {_like(wanted.group)} %", escape="\\"))
    if wanted.text:
        conditions.append(
            or_(
                listed.c.host_id.like(f"%{_like(wanted.text)}%", escape="\\"),
                listed.c.unit.like(f"%{_like(wanted.text)}%", escape="\\"),
            )
        )
    return conditions


def _moment(moment: datetime) -> ColumnElement[Any]:
    """A moment bound as the tables store one (text without offset on SQLite)."""
    return literal(moment, UTCDateTime())


def _like(text: str) -> str:
    """Text matched literally inside a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _aware(moment: Any) -> Any:
    """A datetime from a raw subquery column as an aware UTC datetime (SQLite gives text)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class FindingQuery:
    """What the API's findings list filters on; ``scope_unit``: the reader's unit, if
    limited to one."""

    scope_unit: str | None = None
    unit: str | None = None
    host_id: str | None = None
    rule: str | None = None
    severity: str | None = None
    is_open: bool | None = None
    state: str | None = None
    waived: bool | None = None
    overdue_at: datetime | None = None


def finding_rows(
    conn: Connection, wanted: FindingQuery, *, after: int | None, limit: int
) -> tuple[list[FindingRow], int | None]:
    """One page of findings in order of id, after the id ``after``, every filter in SQL (a
    unit through ``host_placements``); and the id to page on from, if more follow."""
    conditions: list[ColumnElement[bool]] = [
        findings.c.host_id.in_(
            select(host_placements.c.host_id).where(host_placements.c.unit == unit)
        )
        for unit in (wanted.scope_unit, wanted.unit)
        if unit is not None
    ]
    for column, value in (
        (findings.c.host_id, wanted.host_id),
        (findings.c.rule, wanted.rule),
        (findings.c.severity, wanted.severity),
        (findings.c.state, wanted.state),
    ):
        if value is not None:
            conditions.append(column == value)
    if wanted.is_open is not None:
        is_open = findings.c.resolved_at.is_(None)
        conditions.append(is_open if wanted.is_open else ~is_open)
    if wanted.waived is not None:
        waived = findings.c.waiver_id.is_not(None)
        conditions.append(waived if wanted.waived else ~waived)
    if wanted.overdue_at is not None:
        conditions.extend(
            (*counting(), findings.c.due_at <= _moment(wanted.overdue_at)),
        )
    if after is not None:
        conditions.append(findings.c.id > after)
    query = select(findings).where(*conditions).order_by(findings.c.id).limit(limit + 1)
    rows = [FindingRow(**r._mapping) for r in conn.execute(query)]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
