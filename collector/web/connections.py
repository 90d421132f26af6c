"""The open connections of one worker, and which to close when there are too many.

A worker holds at most its cap of connections (`fleetwatch.collector.web.budget`). Counting
every connection alike, as uvicorn's ``limit_concurrency`` does, lets a few thousand slow or
idle clients take every place: a well-behaved client then gets 503s. Here each connection is
known by its stage and since when it is in it, and when the worker nears its cap a new
connection makes room by closing the least useful: connections already closing and idle
keep-alive connections first (a well-behaved client reconnects), then the connections that
have been slowest to send their TLS handshake, headers or body, oldest first. A connection
whose request is complete and being answered is never closed for room; when every place is
taken by such, the new connection is refused.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger(__name__)

SHED_LOG_EVERY = 10.0
"""Seconds between two log lines about shedding: a flood costs one line per interval."""


class Stage(enum.Enum):
    """Where a connection is in its exchange with the client."""

    CLOSING = "closing"
    """Answered and being closed: flushing its answer, or over TLS waiting for the client's
    goodbye."""
    IDLE = "idle"
    """Kept alive between requests."""
    HANDSHAKE = "handshake"
    """Connected over TLS, the handshake not done."""
    HEADERS = "headers"
    """Connected, or a request begun, its headers not complete."""
    BODY = "body"
    """The headers complete, the body still coming."""
    HANDLING = "handling"
    """The request complete, the application answering it."""


DONE_STAGES = (Stage.CLOSING, Stage.IDLE)
"""Shed first, oldest first: connections with nothing in progress."""
SLOW_STAGES = (Stage.HANDSHAKE, Stage.HEADERS, Stage.BODY)
"""Shed next: whichever has been longest in one of these."""


class Connection(Protocol):
    """What the registry needs of a connection: a way to close it."""

    def shed(self) -> None:
        """Close the connection to make room for another."""


class ConnectionRegistry:
    """The open connections of one worker by stage, oldest first; sheds when it nears ``cap``.

    Shedding starts when more than ``cap - headroom`` connections are open; the headroom
    leaves places for new connections while the others are all answering requests.
    """

    def __init__(
        self,
        cap: int,
        *,
        headroom: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.cap = cap
        self.headroom = max(1, cap // 16) if headroom is None else headroom
        self._clock = clock
        self._call_later = call_later
        # dicts keep insertion order: the first key of each is the connection longest in it
        self._by_stage: dict[Stage, dict[Connection, float]] = {stage: {} for stage in Stage}
        self._stage: dict[Connection, Stage] = {}
        self._shed: Counter[str] = Counter()
        self._last_logged = -SHED_LOG_EVERY
        self._log_pending = False

    def __len__(self) -> int:
        return len(self._stage)

    def count(self, stage: Stage) -> int:
        return len(self._by_stage[stage])

    def stage_of(self, connection: Connection) -> Stage | None:
        return self._stage.get(connection)

    def enter(self, connection: Connection, stage: Stage) -> None:
        """``connection`` is now in ``stage`` (since now, unless it was already in it)."""
        current = self._stage.get(connection)
        if current is stage:
            return
        if current is not None:
            del self._by_stage[current][connection]
        self._by_stage[stage][connection] = self._clock()
        self._stage[connection] = stage

    def leave(self, connection: Connection) -> None:
        """``connection`` is closed (calling this again is harmless)."""
        stage = self._stage.pop(connection, None)
        if stage is not None:
            del self._by_stage[stage][connection]

    def admit(self, connection: Connection) -> bool:
        """Make room for ``connection``, just opened and entered: shed older connections while
        the worker is over its threshold. False when the cap is reached and nothing can be
        shed: the caller closes ``connection``, which has left the registry."""
        while len(self) > self.cap - self.headroom:
            victim = self._least_useful(besides=connection)
            if victim is None:
                break
            self._note(self._stage[victim].value)
            self.leave(victim)
            victim.shed()
        if len(self) > self.cap:
            self.leave(connection)
            self._note("refused")
            return False
        return True

    def _least_useful(self, besides: Connection) -> Connection | None:
        for stage in DONE_STAGES:
            oldest = next(iter(self._by_stage[stage]), None)
            if oldest is not None and oldest is not besides:
                return oldest
        victim, since = None, float("inf")
        for stage in SLOW_STAGES:
            for oldest, entered in self._by_stage[stage].items():
                if oldest is not besides and entered < since:
                    victim, since = oldest, entered
                break
        return victim

    def _note(self, what: str) -> None:
        self._shed[what] += 1
        if self._log_pending:
            return
        self._log_pending = True
        wait = max(0.0, self._last_logged + SHED_LOG_EVERY - self._clock())
        call_later = self._call_later or asyncio.get_running_loop().call_later
        call_later(wait, self._log)

    def _log(self) -> None:
        shed, self._shed = self._shed, Counter()
        self._log_pending = False
        self._last_logged = self._clock()
        log.warning(
            "connections shed to stay within the cap",
            cap=self.cap,
            open=len(self),
            closed_closing=shed["closing"],
            closed_idle=shed["idle"],
            closed_slow_handshake=shed["handshake"],
            closed_slow_headers=shed["headers"],
            closed_slow_body=shed["body"],
            refused=shed["refused"],
        )
