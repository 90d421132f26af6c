"""The event log: what happened to a finding, a waiver or a host, who did it and when.

Rows are only ever appended (and pruned by age): the log is the office's audit trail, which
nothing in the API can edit, and the outbox that notifications are sent from. Whoever changes
a finding, a waiver or a host writes its event on the same connection, in the same
transaction, so that an event exists exactly when its change does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from fleetwatch.collector.storage.tables import events

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy import Connection

# What an event may say happened. A finding's life: opened, acknowledged, due_changed, waived,
# unwaived, resolved, verified, reopened, overdue. A waiver's: waiver_created, waiver_expiring,
# waiver_expired, waiver_revoked. A host's: host_stale, host_never_reported, host_back.
EVENT_KINDS = frozenset(
    {
        "opened",
        "acknowledged",
        "due_changed",
        "waived",
        "unwaived",
        "resolved",
        "verified",
        "reopened",
        "overdue",
        "note",
        "waiver_created",
        "waiver_expiring",
        "waiver_expired",
        "waiver_revoked",
        "host_stale",
        "host_never_reported",
        "host_back",
    }
)

# The actor of what the collector did by itself (a report, housekeeping, a policy change).
COLLECTOR = "collector"


@dataclass(frozen=True)
class NewEvent:
    """Something that happened, to be appended to the log."""

    at: datetime
    kind: str
    actor: str = COLLECTOR
    host_id: str | None = None
    unit: str | None = None
    finding_id: int | None = None
    rule: str | None = None
    severity: str | None = None
    subject: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            msg = f"unknown event kind {self.kind!r}"
            raise ValueError(msg)


_COLUMNS = tuple(f.name for f in fields(NewEvent))


@dataclass(frozen=True)
class EventRow(NewEvent):
    """An event in the log, with its place in it."""

    id: int = 0


class Events:
    """The ``events`` table: append and read, never change."""

    def append(self, conn: Connection, new: Sequence[NewEvent]) -> None:
        """Append events, all in one statement."""
        if new:
            conn.execute(
                insert(events), [{name: getattr(e, name) for name in _COLUMNS} for e in new]
            )

    def after(self, conn: Connection, event_id: int, limit: int = 1000) -> list[EventRow]:
        """The events after ``event_id``, oldest first: how a reader of the log goes on."""
        rows = conn.execute(
            select(events).where(events.c.id > event_id).order_by(events.c.id).limit(limit)
        )
        return [EventRow(**row._mapping) for row in rows]

    def for_finding(self, conn: Connection, finding_id: int) -> list[EventRow]:
        """A finding's history, oldest first."""
        rows = conn.execute(
            select(events).where(events.c.finding_id == finding_id).order_by(events.c.id)
        )
        return [EventRow(**row._mapping) for row in rows]

    def query(  # noqa: PLR0913  (one parameter per filter)
        self,
        conn: Connection,
        *,
        kind: str | None = None,
        unit: str | None = None,
        host_id: str | None = None,
        finding_id: int | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> list[EventRow]:
        """Events matching every filter given, oldest first, from after the id ``after``."""
        query = select(events).where(events.c.id > after)
        for column, value in (
            (events.c.kind, kind),
            (events.c.unit, unit),
            (events.c.host_id, host_id),
            (events.c.finding_id, finding_id),
            (events.c.actor, actor),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(events.c.at >= since)
        if until is not None:
            query = query.where(events.c.at < until)
        rows = conn.execute(query.order_by(events.c.id).limit(limit))
        return [EventRow(**row._mapping) for row in rows]

    def counts(
        self, conn: Connection, kinds: Sequence[str], since: datetime, until: datetime
    ) -> dict[tuple[str | None, str], int]:
        """(unit, kind) -> how many events of these kinds in [since, until)."""
        rows = conn.execute(
            select(events.c.unit, events.c.kind, func.count())
            .where(events.c.kind.in_(kinds), events.c.at >= since, events.c.at < until)
            .group_by(events.c.unit, events.c.kind)
        )
        return {(unit, kind): int(count) for unit, kind, count in rows}
