"""The security log: every refused request as one structured line, and a count of every reason.

An operator sees an attack here: forged reports, guessed enrollment secrets, unknown tokens,
floods of any of them. Each refusal is one line, event ``request refused``, with
``logger="fleetwatch.security"``: the client's address, the method and path (never the query
string), the refusal's ``reason`` and HTTP ``status``, and what the refusal knows of the host
involved (``claimed_host``: the host id the request says it is; ``token_host``: the host its
token belongs to). Never a token, a secret, a header or a body.

A flood must not fill the disk: of each reason, at most ``lines`` refusals are written in an
interval of ``interval`` seconds (the interval starts with the first of them). The rest are
counted, and when the interval ends one line says how many were left out and which addresses
sent the most of them. Whether written or not, every refusal is counted by reason and by
status (`SecurityLog.snapshot`), and by reason in the metric ``fleetwatch_refusals_total``
(`collector.instruments`), which adds up every worker process's refusals for ``/metrics``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector import instruments

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.collector.refusals import Refusal

LOGGER_NAME = "fleetwatch.security"
# A path is the client's to choose: enough of it to see what was asked for, no more.
MAX_PATH = 200
# Addresses named in a summary line, and the most told apart in one interval (a flood from
# many addresses must not grow memory without bound: beyond it they count as "other").
TOP_CLIENTS = 5
MAX_CLIENTS = 1000
OTHER_CLIENTS = "other"


def _timer(delay: float, action: Callable[[], None]) -> None:
    """Run ``action`` once, ``delay`` seconds from now, on a thread of its own."""
    timer = threading.Timer(delay, action)
    timer.daemon = True  # a summary pending at exit is written by `SecurityLog.close`
    timer.start()


@dataclass(frozen=True)
class RefusalCounts:
    """Refusals since the process started: by reason, by status, and by reason those left out
    of the log (counted, and summed up in a summary line)."""

    by_reason: dict[str, int]
    by_status: dict[int, int]
    suppressed: dict[str, int]


@dataclass
class _Interval:
    """One reason's lines in the interval that began at ``started``."""

    started: float
    written: int = 0
    suppressed: int = 0
    clients: Counter[str] = field(default_factory=Counter)
    closed: bool = False


class SecurityLog:
    """Writes refusals to the security log within its limits, and counts them all.

    Thread-safe. ``clock`` and ``schedule`` (which runs an action after a delay, to write the
    summary of an interval that ends while no refusal comes) are there for tests.
    """

    def __init__(
        self,
        lines: int = 20,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Callable[[float, Callable[[], None]], None] = _timer,
    ) -> None:
        self.lines = lines
        self.interval = interval
        self._clock = clock
        self._schedule = schedule
        # resolved at each line (not bound once), so logging configured later still applies
        self._log = structlog.get_logger(LOGGER_NAME)
        self._lock = threading.Lock()
        self._intervals: dict[str, _Interval] = {}
        self._by_reason: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._suppressed: Counter[str] = Counter()

    def refused(
        self,
        refusal: Refusal,
        status: int,
        *,
        client: str | None,
        method: str | None,
        path: str | None,
    ) -> None:
        """Count a refused request, and write it to the log unless its reason is flooding."""
        reason = refusal.reason
        now = self._clock()
        ended: _Interval | None = None
        instruments.REFUSALS.labels(reason).inc()
        with self._lock:
            self._by_reason[reason] += 1
            self._by_status[status] += 1
            current = self._intervals.get(reason)
            if current is not None and now - current.started >= self.interval:
                ended = self._close(reason, current)
                current = None
            if current is None:
                current = self._intervals[reason] = _Interval(started=now)
            write = current.written < self.lines
            if write:
                current.written += 1
            else:
                current.suppressed += 1
                self._suppressed[reason] += 1
                _count_client(current.clients, client)
                if current.suppressed == 1:
                    self._schedule(
                        max(0.0, current.started + self.interval - now),
                        lambda: self._end(reason, current),
                    )
        if ended is not None:
            self._summarize(reason, ended, now)
        if write:
            self._log.warning(
                "request refused",
                logger=LOGGER_NAME,
                reason=reason,
                status=status,
                client=client,
                method=method,
                path=path[:MAX_PATH] if path is not None else None,
                claimed_host=refusal.claimed_host,
                token_host=refusal.token_host,
            )

    def snapshot(self) -> RefusalCounts:
        """Every refusal counted so far, written to the log or not."""
        with self._lock:
            return RefusalCounts(
                by_reason=dict(self._by_reason),
                by_status=dict(self._by_status),
                suppressed=dict(self._suppressed),
            )

    def close(self) -> None:
        """Write the summary of every interval still open (the process is stopping)."""
        now = self._clock()
        with self._lock:
            ended = list(self._intervals.items())
            for reason, interval in ended:
                self._close(reason, interval)
        for reason, interval in ended:
            self._summarize(reason, interval, now)

    def _end(self, reason: str, interval: _Interval) -> None:
        """An interval with refusals left out has ended: sum them up (once)."""
        with self._lock:
            if interval.closed:
                return
            self._close(reason, interval)
        self._summarize(reason, interval, self._clock())

    def _close(self, reason: str, interval: _Interval) -> _Interval:
        """Take the interval out of the current ones; called with the lock held."""
        if self._intervals.get(reason) is interval:
            del self._intervals[reason]
        interval.closed = True
        return interval

    def _summarize(self, reason: str, interval: _Interval, now: float) -> None:
        if not interval.suppressed:
            return
        seconds = round(min(now - interval.started, self.interval))
        self._log.warning(
            f"suppressed {interval.suppressed} refusals of reason {reason} "
            f"in the last {seconds} seconds",
            logger=LOGGER_NAME,
            reason=reason,
            suppressed=interval.suppressed,
            seconds=seconds,
            clients=interval.clients.most_common(TOP_CLIENTS),
        )


def _count_client(clients: Counter[str], client: str | None) -> None:
    name = client or "unknown"
    if name in clients or len(clients) < MAX_CLIENTS:
        clients[name] += 1
    else:
        clients[OTHER_CLIENTS] += 1
