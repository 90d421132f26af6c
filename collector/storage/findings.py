"""Findings: a problem a rule found on a host, from when it opened until it was resolved.

At most one finding per host, rule and key is open at a time (a unique index says so).
A finding's response (``state``: open, acknowledged, resolved, verified; its due date, its
waiver) is kept on its row; `compliance.lifecycle` says how it moves.

When a finding was last seen is not rewritten by every report that finds it again: a row
records when it was last seen as of its last change, and ``seen_in_latest`` whether its
host's latest evaluation found it. While both hold (and it is open), it was last seen when the
host's latest report was observed, which reads give as its ``last_seen`` (`shown_last_seen`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, type_coerce, update

from fleetwatch.collector.storage.tables import UTCDateTime, findings, hosts
from fleetwatch.collector.storage.transactions import among_given, as_arrays

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from sqlalchemy import ColumnElement, Connection, Result, Select


@dataclass(frozen=True)
class NewFinding:
    """A problem found for the first time (since the last one like it was resolved)."""

    host_id: str
    rule: str
    key: str  # what the rule found the problem in: a port, a package, a service...
    severity: str
    detail: str
    first_seen: datetime
    last_seen: datetime
    due_at: datetime | None = None
    waiver_id: int | None = None
    # whether the host's latest evaluation found it (then it was last seen at that report)
    seen_in_latest: bool = True


# the states of a finding's case; "live" ones may still change by a report
STATES = ("open", "acknowledged", "resolved", "verified")
ACTIVE_STATES = ("open", "acknowledged")
LIVE_STATES = ("open", "acknowledged", "resolved")

# what a new finding is inserted with: the database gives it its id, and it is open
_NEW_COLUMNS = tuple(f.name for f in fields(NewFinding))


@dataclass(frozen=True, kw_only=True)
class FindingRow(NewFinding):
    """A stored finding."""

    id: int
    resolved_at: datetime | None
    state: str = "open"
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str | None = None
    overdue_at: datetime | None = None
    clean_reports: int = 0
    verified_at: datetime | None = None
    reopened: int = 0

    @property
    def open(self) -> bool:
        """Whether the problem is still there."""
        return self.resolved_at is None

    @property
    def waived(self) -> bool:
        """Whether a waiver excuses it: it does not count against its host."""
        return self.waiver_id is not None

    def is_overdue(self, now: datetime) -> bool:
        """Open, not waived, and past its due date."""
        return (
            self.resolved_at is None
            and self.waiver_id is None
            and self.due_at is not None
            and self.due_at <= now
        )


# the columns a finding's life changes, written back by `Findings.save`
_MUTABLE = (
    "severity",
    "detail",
    "last_seen",
    "seen_in_latest",
    "resolved_at",
    "state",
    "acknowledged_by",
    "acknowledged_at",
    "note",
    "due_at",
    "overdue_at",
    "waiver_id",
    "clean_reports",
    "verified_at",
    "reopened",
)


@dataclass(frozen=True)
class FindingChange:
    """An open finding seen again (``resolved_at`` None) or resolved."""

    id: int
    severity: str
    detail: str
    last_seen: datetime
    resolved_at: datetime | None


def _host_observed_at() -> ColumnElement[datetime]:
    """When the host's latest report was observed (`HostRow.observed_at`), in SQL."""
    collected, received = hosts.c.last_collected_at, hosts.c.last_received_at
    return case((collected < received, collected), else_=received)


def shown_last_seen() -> ColumnElement[datetime]:
    """A finding's ``last_seen`` as readers see it: the latest report that found it (the
    query must join ``hosts``, as `shown` does)."""
    observed = _host_observed_at()
    return type_coerce(
        case(
            (
                and_(
                    findings.c.resolved_at.is_(None),
                    findings.c.seen_in_latest,
                    observed > findings.c.last_seen,
                ),
                observed,
            ),
            else_=findings.c.last_seen,
        ),
        UTCDateTime(),
    )


def shown() -> Select[Any]:
    """Every column of findings, ``last_seen`` as readers see it (`shown_last_seen`)."""
    columns = [
        shown_last_seen().label("last_seen") if c.name == "last_seen" else c for c in findings.c
    ]
    return select(*columns).select_from(
        findings.outerjoin(hosts, hosts.c.host_id == findings.c.host_id)
    )


def _rows(result: Result[Any]) -> list[FindingRow]:
    """Findings from a result of every column (their names looked up once, not per row)."""
    names = tuple(result.keys())
    return [FindingRow(**dict(zip(names, row, strict=True))) for row in result]


@functools.lru_cache(maxsize=2)
def _live_of(dialect: str) -> Select[Any]:
    """The findings of hosts ``:ids`` a report may still change (built once per database kind:
    it runs with every batch of reports)."""
    return select(findings).where(
        among_given(dialect, findings.c.host_id, "ids"),
        or_(findings.c.resolved_at.is_(None), findings.c.state == "resolved"),
    )


class Findings:
    """The ``findings`` table.

    What is read to be shown (`get`, `get_many`, `query`) carries ``last_seen`` as readers
    see it; what reports change (`live_by_host`), as stored.
    """

    def add(self, conn: Connection, new: Sequence[NewFinding]) -> None:
        """Open findings, all in one statement."""
        if new:
            conn.execute(
                insert(findings),
                [{name: getattr(finding, name) for name in _NEW_COLUMNS} for finding in new],
            )

    def open_new(self, conn: Connection, new: Sequence[NewFinding]) -> list[FindingRow]:
        """Open findings, all in one statement, and return them with their ids (in no
        particular order: asking for the order costs a statement per row on SQLite)."""
        if not new:
            return []
        if conn.dialect.name == "postgresql":
            given = as_arrays(
                findings, [[getattr(f, name) for name in _NEW_COLUMNS] for f in new], _NEW_COLUMNS
            )
            rows = conn.execute(
                insert(findings).from_select(_NEW_COLUMNS, select(*given.c)).returning(*findings.c)
            )
        else:
            rows = conn.execute(
                insert(findings).returning(*findings.c),
                [{name: getattr(finding, name) for name in _NEW_COLUMNS} for finding in new],
            )
        return _rows(rows)

    def save(self, conn: Connection, rows: Sequence[FindingRow]) -> None:
        """Write back what changed in these findings (every mutable column), in one statement."""
        if not rows:
            return
        if conn.dialect.name == "postgresql":
            names = ("id", *_MUTABLE)
            given = as_arrays(findings, [[getattr(r, n) for n in names] for r in rows], names)
            conn.execute(
                update(findings)
                .where(findings.c.id == given.c.id)
                .values({name: given.c[name] for name in _MUTABLE})
            )
        else:
            conn.execute(
                update(findings)
                .where(findings.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in _MUTABLE}),
                [
                    {"b_id": row.id} | {f"b_{name}": getattr(row, name) for name in _MUTABLE}
                    for row in rows
                ],
            )

    def get(self, conn: Connection, finding_id: int, *, lock: bool = False) -> FindingRow | None:
        query = shown().where(findings.c.id == finding_id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update(of=findings)
        row = conn.execute(query).first()
        return None if row is None else FindingRow(**row._mapping)

    def get_many(self, conn: Connection, finding_ids: Iterable[int]) -> list[FindingRow]:
        """Findings by id, in id order."""
        wanted = sorted(set(finding_ids))
        if not wanted:
            return []
        query = shown().where(findings.c.id.in_(wanted)).order_by(findings.c.id)
        return [FindingRow(**r._mapping) for r in conn.execute(query)]

    def open_since(self, conn: Connection, moment: datetime) -> list[tuple[str, str, int]]:
        """(host, severity, count) of findings open at ``moment``, as far as the rows tell
        (a case reopened since counts from its first opening)."""
        rows = conn.execute(
            select(findings.c.host_id, findings.c.severity, func.count())
            .where(
                findings.c.first_seen <= moment,
                or_(findings.c.resolved_at.is_(None), findings.c.resolved_at > moment),
            )
            .group_by(findings.c.host_id, findings.c.severity)
        )
        return [(h, s, int(c)) for h, s, c in rows]

    def live_by_host(
        self, conn: Connection, host_ids: Iterable[str]
    ) -> dict[str, list[FindingRow]]:
        """Each host's findings that a report may still change: open, and resolved but not
        yet verified (a problem that comes back then reopens its case)."""
        wanted = sorted(set(host_ids))
        found: dict[str, list[FindingRow]] = {h: [] for h in wanted}
        if not wanted:
            return found
        rows = conn.execute(_live_of(conn.dialect.name), {"ids": wanted})
        for row in _rows(rows):
            found[row.host_id].append(row)
        return found

    def open_where(
        self,
        conn: Connection,
        *,
        host_ids: Iterable[str] | None = None,
        rule: str | None = None,
        waiver_id: int | None = None,
    ) -> list[FindingRow]:
        """Open findings of these hosts, of a rule, or excused by a waiver."""
        query = select(findings).where(findings.c.resolved_at.is_(None))
        if host_ids is not None:
            query = query.where(findings.c.host_id.in_(sorted(set(host_ids))))
        if rule is not None:
            query = query.where(findings.c.rule == rule)
        if waiver_id is not None:
            query = query.where(findings.c.waiver_id == waiver_id)
        return [FindingRow(**r._mapping) for r in conn.execute(query.order_by(findings.c.id))]

    def newly_overdue(self, conn: Connection, now: datetime) -> list[FindingRow]:
        """Open, unwaived findings past their due date not yet announced as overdue."""
        query = select(findings).where(
            findings.c.state.in_(ACTIVE_STATES),
            findings.c.due_at <= now,
            findings.c.overdue_at.is_(None),
            findings.c.waiver_id.is_(None),
        )
        return [FindingRow(**r._mapping) for r in conn.execute(query.order_by(findings.c.id))]

    def resolved_since(self, conn: Connection, before: datetime) -> list[FindingRow]:
        """Findings resolved (not yet verified) at or before ``before``."""
        query = select(findings).where(
            findings.c.state == "resolved", findings.c.resolved_at <= before
        )
        return [FindingRow(**r._mapping) for r in conn.execute(query.order_by(findings.c.id))]

    def change(self, conn: Connection, changes: Sequence[FindingChange]) -> None:
        """Update findings by id, all in one statement."""
        if changes:
            conn.execute(
                update(findings)
                .where(findings.c.id == bindparam("b_id"))
                .values(
                    severity=bindparam("b_severity"),
                    detail=bindparam("b_detail"),
                    last_seen=bindparam("b_last_seen"),
                    resolved_at=bindparam("b_resolved_at"),
                ),
                [
                    {
                        "b_id": c.id,
                        "b_severity": c.severity,
                        "b_detail": c.detail,
                        "b_last_seen": c.last_seen,
                        "b_resolved_at": c.resolved_at,
                    }
                    for c in changes
                ],
            )

    def open_by_host(
        self, conn: Connection, host_ids: Iterable[str]
    ) -> dict[str, list[FindingRow]]:
        """The open findings of each of these hosts (an empty list for a host without any)."""
        wanted = sorted(set(host_ids))
        found: dict[str, list[FindingRow]] = {h: [] for h in wanted}
        if not wanted:
            return found
        rows = conn.execute(
            select(findings).where(findings.c.host_id.in_(wanted), findings.c.resolved_at.is_(None))
        )
        for row in _rows(rows):
            found[row.host_id].append(row)
        return found

    def open_for(self, conn: Connection, host_id: str) -> list[FindingRow]:
        """The open findings of one host."""
        return self.open_by_host(conn, [host_id])[host_id]

    def open_counts(self, conn: Connection) -> dict[str, dict[str, int]]:
        """host -> severity -> number of open findings that count (waived ones do not)."""
        rows = conn.execute(
            select(findings.c.host_id, findings.c.severity, func.count())
            .where(findings.c.resolved_at.is_(None), findings.c.waiver_id.is_(None))
            .group_by(findings.c.host_id, findings.c.severity)
        )
        counts: dict[str, dict[str, int]] = {}
        for host_id, severity, count in rows:
            counts.setdefault(host_id, {})[severity] = int(count)
        return counts

    def open_tally(self, conn: Connection, now: datetime) -> dict[str, tuple[int, int, int]]:
        """host -> (open findings that count, of them overdue at ``now``, open but waived):
        one aggregate over the open findings, a narrow row per host that has any."""
        waived = findings.c.waiver_id.is_not(None)
        late = and_(findings.c.waiver_id.is_(None), findings.c.due_at <= now)
        rows = conn.execute(
            select(
                findings.c.host_id,
                func.sum(case((waived, 0), else_=1)),
                func.sum(case((late, 1), else_=0)),
                func.sum(case((waived, 1), else_=0)),
            )
            .where(findings.c.resolved_at.is_(None))
            .group_by(findings.c.host_id)
        )
        return {h: (int(n), int(o), int(w)) for h, n, o, w in rows}

    def query(  # noqa: PLR0913  (one parameter per filter)
        self,
        conn: Connection,
        *,
        host_ids: list[str] | None = None,
        rule: str | None = None,
        is_open: bool | None = None,
        state: str | None = None,
        waived: bool | None = None,
        overdue_at: datetime | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[FindingRow]:
        """Findings by host, rule and state, in a stable order for paging.

        ``overdue_at``: only findings overdue at that time.
        """
        query = shown()
        if state is not None:
            query = query.where(findings.c.state == state)
        if waived is True:
            query = query.where(findings.c.waiver_id.is_not(None))
        elif waived is False:
            query = query.where(findings.c.waiver_id.is_(None))
        if overdue_at is not None:
            query = query.where(
                and_(
                    findings.c.resolved_at.is_(None),
                    findings.c.waiver_id.is_(None),
                    findings.c.due_at <= overdue_at,
                )
            )
        if host_ids is not None:
            query = query.where(findings.c.host_id.in_(host_ids))
        if rule is not None:
            query = query.where(findings.c.rule == rule)
        if is_open is True:
            query = query.where(findings.c.resolved_at.is_(None))
        elif is_open is False:
            query = query.where(findings.c.resolved_at.is_not(None))
        query = (
            query.order_by(findings.c.host_id, findings.c.rule, findings.c.key, findings.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [FindingRow(**r._mapping) for r in conn.execute(query)]
