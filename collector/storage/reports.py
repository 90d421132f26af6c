"""Reports as received: one row per (host, agent instance, sequence), sections by content hash."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select

from fleetwatch.collector.storage.tables import reports

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy import Connection


@dataclass(frozen=True)
class NewReport:
    """A report to store, as ingest took it in."""

    host_id: str
    instance_id: str
    sequence: int
    collected_at: datetime
    received_at: datetime
    agent_version: str
    sections: dict[str, str]  # section -> content hash
    errors: dict[str, str]  # section -> why the agent could not collect it
    missing: list[str]  # sections sent as a hash the collector did not hold
    dropped: int  # reports the agent dropped since its last delivery
    spool_error: str | None


# what a new row is inserted with (the database gives it its id)
_NEW_COLUMNS = tuple(f.name for f in fields(NewReport))


@dataclass(frozen=True)
class ReportRow(NewReport):
    """A stored report."""

    id: int


class Reports:
    """The ``reports`` table."""

    def add(self, conn: Connection, new: Sequence[NewReport]) -> None:
        """Store reports, all in one statement."""
        if new:
            conn.execute(
                insert(reports),
                [{name: getattr(report, name) for name in _NEW_COLUMNS} for report in new],
            )

    def find(
        self, conn: Connection, host_id: str, instance_id: str, sequence: int
    ) -> ReportRow | None:
        """The report of this name, if it was stored."""
        row = conn.execute(
            select(reports).where(
                reports.c.host_id == host_id,
                reports.c.instance_id == instance_id,
                reports.c.sequence == sequence,
            )
        ).first()
        return None if row is None else ReportRow(**row._mapping)

    def of_host(
        self, conn: Connection, host_id: str, limit: int, before_id: int | None = None
    ) -> list[ReportRow]:
        """A host's reports, newest first, from before report ``before_id`` if given."""
        query = select(reports).where(reports.c.host_id == host_id)
        if before_id is not None:
            query = query.where(reports.c.id < before_id)
        query = query.order_by(reports.c.id.desc()).limit(limit)
        return [ReportRow(**r._mapping) for r in conn.execute(query)]

    def prune(self, conn: Connection, older_than: datetime) -> int:
        """Delete reports received before then, except each host's latest; return how many."""
        latest = select(func.max(reports.c.id)).group_by(reports.c.host_id).scalar_subquery()
        gone = conn.execute(
            delete(reports).where(reports.c.received_at < older_than, reports.c.id.not_in(latest))
        ).rowcount
        return int(gone or 0)
