"""Reports as received: a row per report that brought something new, sections by content hash.

A report that brings nothing new (the same contents as the one before it, from the same agent
instance, next in sequence) does not get a row: it extends the row before it, whose
``through`` then names the last sequence it stands for. So a host whose state does not change
adds no row however often it reports, and its rows still say which reports arrived.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from fleetwatch.collector.storage.tables import reports

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy import Connection, Update


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
    # the last sequence this row stands for, when later reports extended it
    through: int | None = None
    last_received_at: datetime | None = None  # when the last of those came


# what a new row is inserted with (the database gives it its id)
_NEW_COLUMNS = tuple(f.name for f in fields(NewReport))


@dataclass(frozen=True, kw_only=True)
class ReportRow(NewReport):
    """A stored report."""

    id: int

    def covers(self, sequence: int) -> bool:
        """Whether this row stands for the report of that sequence."""
        return self.sequence <= sequence <= (self.through or self.sequence)


@dataclass(frozen=True)
class Extension:
    """A report that brought nothing new: it extends the host's row before it."""

    host_id: str
    instance_id: str
    sequence: int
    received_at: datetime


def _extend_statement() -> Update:
    """The row before a report (``:b_host_id``, ``:b_instance_id``, ``:b_sequence``) made to
    stand for it. Built once: an aliased table's columns are built anew with each alias."""
    before = reports.alias("before")
    row_before = (
        select(before.c.id)
        .where(
            before.c.host_id == bindparam("b_host_id"),
            before.c.instance_id == bindparam("b_instance_id"),
            before.c.sequence < bindparam("b_sequence"),
        )
        .order_by(before.c.sequence.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        update(reports)
        .where(reports.c.id == row_before)
        .values(through=bindparam("b_sequence"), last_received_at=bindparam("b_received_at"))
    )


_EXTEND = _extend_statement()

# PostgreSQL: the same for a whole batch in one statement, from one array per field.
_EXTEND_FROM_ARRAYS = text(
    """
    UPDATE reports SET through = given.sequence, last_received_at = given.received_at
    FROM unnest(:a_host_id, :a_instance_id, :a_sequence, :a_received_at)
        AS given(host_id, instance_id, sequence, received_at)
    CROSS JOIN LATERAL (
        SELECT id FROM reports AS before
        WHERE before.host_id = given.host_id AND before.instance_id = given.instance_id
            AND before.sequence < given.sequence
        ORDER BY before.sequence DESC LIMIT 1
    ) AS row_before
    WHERE reports.id = row_before.id
    """
).bindparams(
    *(
        bindparam(f"a_{name}", type_=ARRAY(reports.c[column].type))
        for name, column in (
            ("host_id", "host_id"),
            ("instance_id", "instance_id"),
            ("sequence", "sequence"),
            ("received_at", "last_received_at"),
        )
    )
)


class Reports:
    """The ``reports`` table."""

    def add(self, conn: Connection, new: Sequence[NewReport]) -> None:
        """Store reports, all in one statement."""
        if new:
            conn.execute(
                insert(reports),
                [{name: getattr(report, name) for name in _NEW_COLUMNS} for report in new],
            )

    def extend(self, conn: Connection, extensions: Sequence[Extension]) -> None:
        """Let each host's row before these reports stand for them too, in one statement."""
        if not extensions:
            return
        if conn.dialect.name == "postgresql":
            # A row one statement updates twice takes only one of the two updates, so a
            # host's second quiet report in the batch goes in a second round, its third in a
            # third: the rounds apply them in the order they came, as one statement each did.
            rounds: list[list[Extension]] = []
            taken: Counter[tuple[str, str]] = Counter()
            for e in extensions:
                n = taken[(e.host_id, e.instance_id)]
                taken[(e.host_id, e.instance_id)] += 1
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append(e)
            for group in rounds:
                conn.execute(
                    _EXTEND_FROM_ARRAYS,
                    {
                        "a_host_id": [e.host_id for e in group],
                        "a_instance_id": [e.instance_id for e in group],
                        "a_sequence": [e.sequence for e in group],
                        "a_received_at": [e.received_at for e in group],
                    },
                )
            return
        conn.execute(
            _EXTEND,
            [
                {
                    "b_host_id": e.host_id,
                    "b_instance_id": e.instance_id,
                    "b_sequence": e.sequence,
                    "b_received_at": e.received_at,
                }
                for e in extensions
            ],
        )

    def find(
        self, conn: Connection, host_id: str, instance_id: str, sequence: int
    ) -> ReportRow | None:
        """The row that stands for the report of this name, if it arrived."""
        row = conn.execute(
            select(reports)
            .where(
                reports.c.host_id == host_id,
                reports.c.instance_id == instance_id,
                reports.c.sequence <= sequence,
            )
            .order_by(reports.c.sequence.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        found = ReportRow(**row._mapping)
        return found if found.covers(sequence) else None

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
        last_came = func.coalesce(reports.c.last_received_at, reports.c.received_at)
        gone = conn.execute(
            delete(reports).where(last_came < older_than, reports.c.id.not_in(latest))
        ).rowcount
        return int(gone or 0)
