"""The sender: the one process of the fleet that reads the event log and notifies.

Every collector process runs a `Sender` thread; only the holder of the ``notifications``
lease (`storage.lease`, as for housekeeping) does anything, so however many workers and
collector hosts share the database, one sends. Each pass:

1. **plan**: in one transaction, read the events after the cursor, route each one
   (`routing`), record each (event, target) once with the delivery that carries it, and
   advance the cursor. A crash before the commit leaves the cursor where it was; after it,
   the deliveries are in the database. When one pass holds more than ``notify_storm_threshold``
   events for one unit and target (a policy change opening 2,000 findings), they are one
   summary, not one message each.
2. **digest**: events that wait for a unit's daily digest go out once a day, at
   ``notify_digest_time`` (UTC), as one message per unit and target.
3. **send**: each delivery whose time has come is sent; a success marks it sent, a failure
   schedules the next attempt with exponential backoff and jitter, until
   ``notify_give_up_after`` has passed since it was recorded (then it is failed). A target
   that fails is not tried again in the same pass.

Between a send and the commit that marks it sent, a crash means the message is sent again
by whoever holds the lease next: each message carries its delivery id (the webhook's
``X-Fleetwatch-Delivery`` and ``Idempotency-Key``, the e-mail's Message-ID) for the
receiver to drop the second copy.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
import structlog

from fleetwatch.collector.notifications import messages
from fleetwatch.collector.notifications.config import Target
from fleetwatch.collector.notifications.routing import destinations
from fleetwatch.collector.notifications.targets import DeliveryFailed, send
from fleetwatch.collector.notifications.units import EMAIL_TARGET_PREFIX
from fleetwatch.collector.storage.deliveries import EventForTarget, NewDelivery
from fleetwatch.collector.storage.lease import FleetLease

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sqlalchemy import Connection

    from fleetwatch.collector.notifications.config import Notifications, NotificationsSource
    from fleetwatch.collector.notifications.units import UnitContacts
    from fleetwatch.collector.settings import CollectorSettings
    from fleetwatch.collector.storage.deliveries import DeliveryRow
    from fleetwatch.collector.storage.events import EventRow
    from fleetwatch.collector.storage.store import Store

log = structlog.get_logger(__name__)

LEASE_NAME = "notifications"
PRUNE_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    events: int = 0  # events read from the log
    planned: int = 0  # deliveries recorded (events, summaries)
    digests: int = 0
    sent: int = 0
    failed: int = 0  # failed attempts (retried later, or given up)


@dataclass(frozen=True)
class TargetStatus:
    """How a target is doing: ``ok``, ``retrying`` (failed lately, being retried) or
    ``failing`` (failed ``notify_failing_after`` times in a row, or given up on since its
    last success)."""

    target: str
    kind: str
    state: str
    pending: int
    sent: int
    failed: int
    last_sent_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    oldest_pending_at: datetime | None


@dataclass(frozen=True)
class TestResult:
    """What sending a test message did."""

    __test__ = False  # not a test class for pytest

    target: str
    ok: bool
    detail: str


class Sender:
    """A thread that, in the holder of the lease, sends what the event log asks for."""

    def __init__(
        self,
        settings: CollectorSettings,
        store: Store,
        source: NotificationsSource,
        units: Callable[[], Mapping[str, UnitContacts]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.units = units
        self.lease = FleetLease(store.database.engine, LEASE_NAME)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = False
        self._next_prune: datetime | None = None
        # kept connections to webhook targets: a storm of messages to one office hook is
        # one TLS handshake, not one per message (used by the sending thread only)
        self._http = requests.Session()

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._thread = None
        self._stop.clear()
        self.lease.release()
        self._http.close()
        self._holding = False

    def _run(self) -> None:
        while not self._stop.wait(self.settings.notify_interval):
            try:
                self.round()
            except Exception as exc:  # noqa: BLE001  (the sender must outlive a bad moment)
                log.error("notifications failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def round(self, now: datetime | None = None) -> PassResult | None:
        """Follow the notifications file; in the lease's holder, do one pass."""
        if self.source.reload_if_changed():
            log.info("notifications file loaded", source=self.source.current.source)
        elif self.source.error:
            log.error(
                "notifications file not loaded; the previous one stays in force",
                error=self.source.error,
            )
        holding = self.lease.held()
        if holding != self._holding:
            self._holding = holding
            if holding:
                log.info("this process now sends the fleet's notifications")
        if not holding:
            return None
        return self.one_pass(now or datetime.now(UTC))

    def one_pass(self, now: datetime) -> PassResult:
        """Plan what the log holds, make the digests that are due, send what is due."""
        events = planned = 0
        while True:  # a backlog is planned in batches, then sent
            read, made = self.plan(now)
            events, planned = events + read, planned + made
            if read < self.settings.notify_batch:
                break
        digests = self.digest(now)
        sent, failed = self.send_due(now)
        if self._next_prune is None or now >= self._next_prune:
            self.prune(now)
            self._next_prune = now + PRUNE_EVERY
        result = PassResult(events, planned, digests, sent, failed)
        if planned or digests or sent or failed:
            log.info("notifications pass", **vars(result))
        return result

    def prune(self, now: datetime) -> int:
        """Delete deliveries done with more than ``notify_retention_days`` ago."""
        cutoff = now - timedelta(days=self.settings.notify_retention_days)
        with self.store.write() as conn:
            count = self.store.deliveries.prune(conn, cutoff)
        if count:
            log.info("pruned old deliveries", deliveries=count)
        return count

    # -- plan ------------------------------------------------------------------------------

    def plan(self, now: datetime) -> tuple[int, int]:
        """Record the deliveries of the events after the cursor; (events read, deliveries)."""
        notifications = self.source.current
        units = self.units()
        store = self.store
        with store.write() as conn:
            cursor = store.deliveries.cursor(conn)
            events = store.events.after(conn, cursor, limit=self.settings.notify_batch)
            if not events:
                return 0, 0
            immediate: dict[tuple[str, str | None], list[EventRow]] = defaultdict(list)
            waiting: list[EventForTarget] = []
            for event in events:
                for destination in destinations(event, notifications, units):
                    if destination.daily:
                        waiting.append(
                            EventForTarget(
                                event.id,
                                destination.target,
                                event.unit,
                                now,
                                item=messages.item_of(event),
                            )
                        )
                    else:
                        immediate[destination.target, event.unit].append(event)
            made = self._record(conn, immediate, now)
            store.deliveries.record_events(conn, waiting)
            store.deliveries.advance(conn, events[-1].id)
        return len(events), made

    def _record(
        self,
        conn: Connection,
        immediate: dict[tuple[str, str | None], list[EventRow]],
        now: datetime,
    ) -> int:
        deliveries = self.store.deliveries
        rows: list[EventForTarget] = []
        made = 0
        for (target, unit), events in immediate.items():
            items = [messages.item_of(e) for e in events]
            if len(events) > self.settings.notify_storm_threshold:
                content = messages.summary_content(unit, items)
                delivery = deliveries.add(conn, NewDelivery(target, unit, "summary", content, now))
                rows += [EventForTarget(e.id, target, unit, now, delivery) for e in events]
                made += 1
                continue
            for event, item in zip(events, items, strict=True):
                content = messages.event_content(item)
                delivery = deliveries.add(conn, NewDelivery(target, unit, "event", content, now))
                rows.append(EventForTarget(event.id, target, unit, now, delivery))
                made += 1
        deliveries.record_events(conn, rows)
        return made

    # -- digests ---------------------------------------------------------------------------

    def digest_cutoff(self, now: datetime) -> datetime:
        """The latest digest time at or before ``now``."""
        at = datetime.combine(now.date(), self.settings.notify_digest_time, tzinfo=UTC)
        return at if at <= now else at - timedelta(days=1)

    def digest(self, now: datetime) -> int:
        """Send each unit's waiting events as one digest per target, once the day's digest
        time has passed them; how many digests were made."""
        cutoff = self.digest_cutoff(now)
        deliveries = self.store.deliveries
        with self.store.write() as conn:
            waiting = deliveries.waiting_for_digest(conn, cutoff)
            groups: dict[tuple[str, str | None], list[EventForTarget]] = defaultdict(list)
            for row in waiting:
                groups[row.target, row.unit].append(row)
            for (target, unit), rows in groups.items():
                items = [r.item or {} for r in rows]
                content = messages.digest_content(unit, items, cutoff)
                delivery = deliveries.add(conn, NewDelivery(target, unit, "digest", content, now))
                deliveries.attach(conn, delivery, [(r.event_id, r.target) for r in rows])
        return len(groups)

    # -- send ------------------------------------------------------------------------------

    def resolve(self, name: str, notifications: Notifications) -> Target | None:
        """The target of a name: one of the file's, or ``unit:NAME`` (a unit's addresses)."""
        if name.startswith(EMAIL_TARGET_PREFIX):
            unit = self.units().get(name.removeprefix(EMAIL_TARGET_PREFIX))
            if unit is None or not unit.emails:
                return None
            return Target(kind="email", to=list(unit.emails))
        return notifications.targets.get(name)

    def send_due(self, now: datetime) -> tuple[int, int]:
        """Send every delivery whose time has come; (sent, failed attempts)."""
        with self.store.read() as conn:
            due = self.store.deliveries.due(conn, now, limit=self.settings.notify_batch)
        sent = failed = 0
        broken: set[str] = set()  # targets that failed in this pass
        for row in due:
            if row.target in broken:
                continue
            outcome = self._send_one(row, now)
            if outcome == "sent":
                sent += 1
                continue
            failed += 1
            if outcome == "target failed":  # not when the message itself was at fault
                broken.add(row.target)
        return sent, failed

    def _send_one(self, row: DeliveryRow, now: datetime) -> str:
        """Send one delivery: "sent", "target failed" or "message failed"."""
        notifications = self.source.current
        target = self.resolve(row.target, notifications)
        try:
            if target is None:
                raise DeliveryFailed(f"no target named {row.target!r} any more")  # noqa: TRY301  (one failure path for every cause)
            # signed with the time of sending, whatever time the pass is planned for
            send(
                row.target,
                target,
                row.id,
                row.content,
                smtp=notifications.smtp,
                external_url=notifications.external_url,
                now=datetime.now(UTC),
                http=self._http,
            )
        except Exception as exc:  # noqa: BLE001  (one message that cannot be sent, whyever, must not stop the others)
            error = str(exc) if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"
            retry_at = self.retry_at(row, now)
            with self.store.write() as conn:
                self.store.deliveries.mark_failed(conn, row.id, now, error, retry_at)
            log.warning(
                "notification not delivered",
                target=row.target,
                delivery=row.id,
                attempts=row.attempts + 1,
                error=error,
                retry_at=retry_at.isoformat() if retry_at else "given up",
            )
            return "target failed" if isinstance(exc, DeliveryFailed) else "message failed"
        with self.store.write() as conn:
            self.store.deliveries.mark_sent(conn, row.id, now)
        return "sent"

    def retry_at(self, row: DeliveryRow, now: datetime) -> datetime | None:
        """When to try a delivery again after its latest failure: exponential backoff with
        jitter (half the delay is random), or None once it is past ``notify_give_up_after``."""
        settings = self.settings
        delay = min(settings.notify_retry_max, settings.notify_retry_first * 2**row.attempts)
        delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311  (jitter, not secrecy)
        retry = now + timedelta(seconds=delay)
        if retry - row.created_at > timedelta(seconds=settings.notify_give_up_after):
            return None
        return retry

    # -- status and tests ------------------------------------------------------------------

    def status(self) -> list[TargetStatus]:
        """Every configured target and every target with deliveries, and how it is doing."""
        notifications = self.source.current
        with self.store.read() as conn:
            counts = {c.target: c for c in self.store.deliveries.counts(conn)}
            errors = {name: self.store.deliveries.latest_error(conn, name) for name in counts}
        names = sorted(set(notifications.targets) | set(counts))
        result = []
        for name in names:
            c = counts.get(name)
            error = errors.get(name)
            target = self.resolve(name, notifications)
            state = "ok"
            if c is not None:
                gave_up = (
                    c.failed and error and (c.last_sent_at is None or error[0] > c.last_sent_at)
                )
                if c.most_attempts >= self.settings.notify_failing_after or gave_up:
                    state = "failing"
                elif c.retrying:
                    state = "retrying"
            result.append(
                TargetStatus(
                    target=name,
                    kind=target.kind if target else "(unknown)",
                    state=state,
                    pending=c.pending if c else 0,
                    sent=c.sent if c else 0,
                    failed=c.failed if c else 0,
                    last_sent_at=c.last_sent_at if c else None,
                    last_error_at=error[0] if error else None,
                    last_error=error[1] if error else None,
                    oldest_pending_at=c.oldest_pending_at if c else None,
                )
            )
        return result

    def send_test(self, name: str) -> TestResult:
        """Send a test message to a target now, outside the log; what happened."""
        notifications = self.source.current
        target = self.resolve(name, notifications)
        if target is None:
            known = ", ".join(sorted(notifications.targets)) or "none"
            return TestResult(name, ok=False, detail=f"no target named {name!r} (known: {known})")
        now = datetime.now(UTC)
        content: dict[str, Any] = messages.test_content(name, now)
        try:
            answer = send(
                name,
                target,
                0,
                content,
                smtp=notifications.smtp,
                external_url=notifications.external_url,
                now=now,
            )
        except DeliveryFailed as exc:
            return TestResult(name, ok=False, detail=str(exc))
        return TestResult(name, ok=True, detail=answer)
