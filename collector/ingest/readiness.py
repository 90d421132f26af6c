"""Whether the collector can store reports now: readiness, as a load balancer asks it.

The process being up and the database answering a query (liveness, ``/healthz``) is not
enough: with the disk full or the database read-only, every report is refused. So the writer
records the outcome of each write here (`succeeded`, `failed`), and the collector is not ready
while the last write failed and none has succeeded since.

A collector that has not written yet, or not for ``probe_after`` seconds, knows nothing
fresh, so `check` then makes a small write of its own (`Store.probe_write`: a row added and
removed in one transaction that is committed), and its outcome counts like any other. A probe
that rolled back would prove little: SQLite writes nothing to its file before the commit, so
a full disk would go unseen. What the probe detects: a read-only database (SQLite's "attempt
to write a readonly database", PostgreSQL's read-only transaction or standby), a database that
is locked or gone, and a disk too full for the few pages of a commit. A disk with room for
those but not for a full report is seen at the next report that fails.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

MAX_ERROR = 200


class Probed(Protocol):
    """What readiness asks of the database (`Store` is one)."""

    def ping(self) -> None: ...

    def probe_write(self) -> None: ...


@dataclass(frozen=True)
class Ready:
    """The answer to "can this collector store reports now?"; ``reason`` says why not."""

    ready: bool
    reason: str | None = None
    since: datetime | None = None


def is_write_failure(error: BaseException) -> bool:
    """Whether a write failed because of the database (full, read-only, gone, locked) rather
    than because of what one report holds (a constraint, a value out of range, a bug).

    Only the first kind makes the collector not ready: a single report that cannot be stored
    must not take every collector it is retried against out of service.
    """
    if isinstance(error, PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and not isinstance(error, IntegrityError | DataError)


def describe(error: BaseException) -> str:
    """The database's own words for an error, without the statement and its parameters (which
    hold what hosts sent)."""
    words = error.orig if isinstance(error, DBAPIError) else error
    first_line = (str(words).strip().splitlines() or [type(words).__name__])[0]
    return first_line[:MAX_ERROR]


class Readiness:
    """The outcome of the collector's last write, and a probe when there was none for a while.

    Thread-safe: the ingest writer records, request threads check.
    """

    def __init__(
        self,
        database: Probed,
        probe_after: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.probe_after = probe_after
        self._clock = clock
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        # when a write last succeeded or failed; None: not yet, so the first check probes
        self._last_write: float | None = None
        self._failure: str | None = None
        self._failing_since: datetime | None = None

    def succeeded(self) -> None:
        """A write committed."""
        with self._lock:
            self._last_write = self._clock()
            recovered = self._failure is not None
            self._failure = None
            self._failing_since = None
        if recovered:
            log.info("writes succeed again; ready")

    def failed(self, error: BaseException) -> None:
        """A write failed; only failures of the database (`is_write_failure`) count."""
        if is_write_failure(error):
            self._failed(describe(error))

    def _failed(self, words: str) -> None:
        with self._lock:
            self._last_write = self._clock()
            first = self._failure is None
            self._failure = words
            if first:
                self._failing_since = datetime.now(UTC)
        if first:
            log.error("writes fail; not ready", error=words)

    def check(self) -> Ready:
        """Ready unless the last write failed and none succeeded since, or the database does
        not answer; a write is tried first when none was made yet or for ``probe_after``
        seconds."""
        with self._lock:
            last = self._last_write
            idle = last is None or self._clock() - last >= self.probe_after
        # one probe at a time: other requests meanwhile take the last outcome known
        if idle and self._probing.acquire(blocking=False):
            try:
                self._probe()
            finally:
                self._probing.release()
        else:
            try:
                self.database.ping()
            except (DBAPIError, PoolTimeoutError) as exc:
                return Ready(ready=False, reason=f"database unavailable: {describe(exc)}")
        with self._lock:
            if self._failure is not None:
                return Ready(
                    ready=False,
                    reason=f"writes fail: {self._failure}",
                    since=self._failing_since,
                )
        return Ready(ready=True)

    def _probe(self) -> None:
        try:
            self.database.probe_write()
        except (DBAPIError, PoolTimeoutError) as exc:
            # whatever the database says, our own harmless write failing means writes fail
            self._failed(describe(exc))
        else:
            self.succeeded()
