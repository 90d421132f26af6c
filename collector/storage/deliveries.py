"""Deliveries: the notification sender's cursor in the event log, and what it sends to whom.

The event log (`storage.events`) is the outbox. The sender reads it from its cursor and, in
the transaction that advances the cursor, records each event meant for each target once
(``delivery_events``, keyed by event and target: a second record of the same pair is an
integrity error, not a second message) and the messages that carry them (``deliveries``: one
event, or a storm's summary, or a unit's digest). A delivery is pending until a target takes
it (sent), or until the sender gives up on it (failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, delete, func, insert, select, tuple_, update

from fleetwatch.collector.storage.tables import deliveries, delivery_events, notification_cursor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection

    from fleetwatch.collector.storage.transactions import Database

CURSOR = "sender"
PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class NewDelivery:
    """A message to be sent to one target."""

    target: str
    unit: str | None
    kind: str  # event | summary | digest
    content: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    """A message in the table, with where it stands."""

    id: int
    target: str
    unit: str | None
    kind: str
    content: dict[str, Any]
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None


@dataclass(frozen=True)
class EventForTarget:
    """One event meant for one target; ``delivery_id`` None while it waits for a digest."""

    event_id: int
    target: str
    unit: str | None
    created_at: datetime
    delivery_id: int | None = None
    item: dict[str, Any] | None = None  # kept while it waits for a digest


@dataclass(frozen=True)
class TargetCounts:
    """A target's deliveries by state, and its latest news."""

    target: str
    pending: int
    sent: int
    failed: int
    retrying: int  # pending deliveries that have failed at least once
    most_attempts: int  # of a pending delivery: how many times the target failed it
    last_sent_at: datetime | None
    last_attempt_at: datetime | None
    oldest_pending_at: datetime | None


class Deliveries:
    """The ``notification_cursor``, ``deliveries`` and ``delivery_events`` tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- the cursor ------------------------------------------------------------------------

    def cursor(self, conn: Connection) -> int:
        """The id of the last event passed, locked until commit (created at 0 the first time)."""
        query = select(notification_cursor.c.event_id).where(notification_cursor.c.name == CURSOR)
        found = conn.execute(self.database.locking(query)).scalar_one_or_none()
        if found is not None:
            return int(found)
        conn.execute(
            self.database.insert_ignore(notification_cursor).values(name=CURSOR, event_id=0)
        )
        return int(conn.execute(self.database.locking(query)).scalar_one())

    def advance(self, conn: Connection, event_id: int) -> None:
        conn.execute(
            update(notification_cursor)
            .where(notification_cursor.c.name == CURSOR)
            .values(event_id=event_id)
        )

    # -- recording -------------------------------------------------------------------------

    def add(self, conn: Connection, new: NewDelivery) -> int:
        """A pending delivery, due now; its id."""
        result = conn.execute(
            insert(deliveries)
            .values(
                target=new.target,
                unit=new.unit,
                kind=new.kind,
                content=new.content,
                state=PENDING,
                attempts=0,
                created_at=new.created_at,
                next_attempt_at=new.created_at,
            )
            .returning(deliveries.c.id)
        )
        return int(result.scalar_one())

    def record_events(self, conn: Connection, rows: Sequence[EventForTarget]) -> None:
        """Record events for targets; one already recorded for a target raises IntegrityError."""
        if rows:
            conn.execute(
                insert(delivery_events),
                [
                    {
                        "event_id": r.event_id,
                        "target": r.target,
                        "unit": r.unit,
                        "delivery_id": r.delivery_id,
                        "created_at": r.created_at,
                        "item": r.item,
                    }
                    for r in rows
                ],
            )

    def waiting_for_digest(self, conn: Connection, before: datetime) -> list[EventForTarget]:
        """Events recorded before ``before`` that no delivery carries yet, oldest first."""
        rows = conn.execute(
            select(delivery_events)
            .where(delivery_events.c.delivery_id.is_(None), delivery_events.c.created_at < before)
            .order_by(delivery_events.c.event_id)
        )
        return [EventForTarget(**row._mapping) for row in rows]

    def attach(self, conn: Connection, delivery_id: int, keys: Sequence[tuple[int, str]]) -> None:
        """Let delivery ``delivery_id`` carry these (event, target) pairs."""
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            conn.execute(
                update(delivery_events)
                .where(tuple_(delivery_events.c.event_id, delivery_events.c.target).in_(chunk))
                .values(delivery_id=delivery_id, item=None)
            )

    def events_of(self, conn: Connection, delivery_id: int) -> list[int]:
        """The ids of the events a delivery carries."""
        rows = conn.execute(
            select(delivery_events.c.event_id)
            .where(delivery_events.c.delivery_id == delivery_id)
            .order_by(delivery_events.c.event_id)
        )
        return [int(r) for r in rows.scalars()]

    # -- sending ---------------------------------------------------------------------------

    def due(self, conn: Connection, now: datetime, limit: int = 100) -> list[DeliveryRow]:
        """Pending deliveries whose time has come, oldest first."""
        rows = conn.execute(
            select(deliveries)
            .where(deliveries.c.state == PENDING, deliveries.c.next_attempt_at <= now)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        return [DeliveryRow(**row._mapping) for row in rows]

    def get(self, conn: Connection, delivery_id: int) -> DeliveryRow | None:
        row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return DeliveryRow(**row._mapping) if row else None

    def for_target(self, conn: Connection, target: str, limit: int = 1000) -> list[DeliveryRow]:
        """A target's deliveries, oldest first."""
        rows = conn.execute(
            select(deliveries)
            .where(deliveries.c.target == target)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        return [DeliveryRow(**row._mapping) for row in rows]

    def mark_sent(self, conn: Connection, delivery_id: int, at: datetime) -> None:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                state=SENT,
                attempts=deliveries.c.attempts + 1,
                last_attempt_at=at,
                sent_at=at,
            )
        )

    def mark_failed(
        self,
        conn: Connection,
        delivery_id: int,
        at: datetime,
        error: str,
        retry_at: datetime | None,
    ) -> None:
        """One more failed attempt: tried again at ``retry_at``, or given up on (None)."""
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                state=PENDING if retry_at is not None else FAILED,
                attempts=deliveries.c.attempts + 1,
                last_attempt_at=at,
                last_error=error[:500],
                next_attempt_at=retry_at if retry_at is not None else at,
            )
        )

    def prune(self, conn: Connection, older_than: datetime) -> int:
        """Delete deliveries done with (sent or failed) before then, and the records of the
        events they carried; return how many deliveries. The cursor is past those events, so
        they are never planned again."""
        done = and_(
            deliveries.c.state != PENDING,
            func.coalesce(deliveries.c.last_attempt_at, deliveries.c.created_at) < older_than,
        )
        conn.execute(
            delete(delivery_events).where(
                delivery_events.c.delivery_id.in_(select(deliveries.c.id).where(done))
            )
        )
        return int(conn.execute(delete(deliveries).where(done)).rowcount or 0)

    def counts(self, conn: Connection) -> list[TargetCounts]:
        """Every target that has deliveries, with its counts by state."""
        pending = deliveries.c.state == PENDING
        rows = conn.execute(
            select(
                deliveries.c.target,
                func.count().filter(pending),
                func.count().filter(deliveries.c.state == SENT),
                func.count().filter(deliveries.c.state == FAILED),
                func.count().filter(and_(pending, deliveries.c.attempts > 0)),
                func.max(case((pending, deliveries.c.attempts), else_=0)),
                func.max(deliveries.c.sent_at),
                func.max(deliveries.c.last_attempt_at),
                func.min(case((pending, deliveries.c.created_at), else_=None)),
            )
            .group_by(deliveries.c.target)
            .order_by(deliveries.c.target)
        )
        return [
            TargetCounts(
                target=r[0],
                pending=r[1],
                sent=r[2],
                failed=r[3],
                retrying=r[4],
                most_attempts=r[5] or 0,
                last_sent_at=_aware(r[6]),
                last_attempt_at=_aware(r[7]),
                oldest_pending_at=_aware(r[8]),
            )
            for r in rows
        ]

    def latest_error(self, conn: Connection, target: str) -> tuple[datetime, str] | None:
        """When a target last failed a delivery, and what it said."""
        row = conn.execute(
            select(deliveries.c.last_attempt_at, deliveries.c.last_error)
            .where(deliveries.c.target == target, deliveries.c.last_error.is_not(None))
            .order_by(deliveries.c.last_attempt_at.desc())
            .limit(1)
        ).first()
        if row is None or row[0] is None:
            return None
        return row[0], row[1]


def _aware(value: Any) -> datetime | None:
    """Aggregates skip the column's type: SQLite hands back text, PostgreSQL an aware value."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    moment: datetime = value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
