"""Findings: a problem a rule found on a host, from when it opened until it was resolved.

At most one finding per host, rule and key is open at a time (a unique index says so).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, update

from fleetwatch.collector.storage.tables import findings

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from sqlalchemy import Connection


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


# what a new finding is inserted with: the database gives it its id, and it is open
_NEW_COLUMNS = tuple(f.name for f in fields(NewFinding))


@dataclass(frozen=True)
class FindingRow(NewFinding):
    """A stored finding."""

    id: int
    resolved_at: datetime | None

    @property
    def open(self) -> bool:
        """Whether the problem is still there."""
        return self.resolved_at is None


@dataclass(frozen=True)
class FindingChange:
    """An open finding seen again (``resolved_at`` None) or resolved."""

    id: int
    severity: str
    detail: str
    last_seen: datetime
    resolved_at: datetime | None


class Findings:
    """The ``findings`` table."""

    def add(self, conn: Connection, new: Sequence[NewFinding]) -> None:
        """Open findings, all in one statement."""
        if new:
            conn.execute(
                insert(findings),
                [{name: getattr(finding, name) for name in _NEW_COLUMNS} for finding in new],
            )

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
        for row in rows:
            found[row.host_id].append(FindingRow(**row._mapping))
        return found

    def open_for(self, conn: Connection, host_id: str) -> list[FindingRow]:
        """The open findings of one host."""
        return self.open_by_host(conn, [host_id])[host_id]

    def open_counts(self, conn: Connection) -> dict[str, dict[str, int]]:
        """host -> severity -> number of open findings."""
        rows = conn.execute(
            select(findings.c.host_id, findings.c.severity, func.count())
            .where(findings.c.resolved_at.is_(None))
            .group_by(findings.c.host_id, findings.c.severity)
        )
        counts: dict[str, dict[str, int]] = {}
        for host_id, severity, count in rows:
            counts.setdefault(host_id, {})[severity] = int(count)
        return counts

    def query(
        self,
        conn: Connection,
        *,
        host_ids: list[str] | None = None,
        rule: str | None = None,
        is_open: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[FindingRow]:
        """Findings by host, rule and state, in a stable order for paging."""
        query = select(findings)
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
