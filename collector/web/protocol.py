"""uvicorn's HTTP protocol with deadlines for slow clients and a place in the connection budget.

uvicorn times out idle keep-alive connections but lets a client take forever over the headers
of a request. A client that opens connections and trickles header bytes (slowloris) would hold
them all. Here a new connection must complete its first request's headers within
``header_timeout`` seconds, and every later request on it within ``header_timeout`` of its
first byte; the body has its own deadline (``body_timeout``, in
`fleetwatch.collector.web.bodies`). A request answered before its body arrived (a refusal)
gets ``body_timeout`` for the rest of it, and not a keep-alive connection held open forever.

Every connection is entered in this worker's `ConnectionRegistry` with its stage, so that a
worker near its cap closes idle and slow connections for new ones rather than starve
(`fleetwatch.collector.web.connections`).

The uvicorn hooks and attributes this relies on (``tests/collector/web/test_protocol.py``
checks they are still there): the hooks ``connection_made``, ``connection_lost``,
``on_message_begin``, ``on_headers_complete``, ``on_message_complete``,
``on_response_complete`` (handed to each request's cycle as ``on_response``) and
``timeout_keep_alive_handler``; the attributes ``loop``, ``transport``, ``cycle`` (its
``response_complete``) and ``pipeline`` (requests waiting behind the one being answered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fleetwatch.collector.web.budget import plan_budget
from fleetwatch.collector.web.connections import ConnectionRegistry, Stage
from fleetwatch.collector.web.loop import GuardedServers

if TYPE_CHECKING:
    import asyncio

    from fleetwatch.collector.settings import CollectorSettings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # set from the collector's settings by `guard_connections` when a worker builds its app
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    registry: ClassVar[ConnectionRegistry] = ConnectionRegistry(cap=1 << 30)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._body_received = True  # no request in progress

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        # abort, not close: over TLS, close would wait for the client's goodbye
        self.transport.abort()

    def shed(self) -> None:
        """Close this connection: the registry needs its place."""
        self._disarm()
        self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)
        self.registry.enter(self, Stage.HEADERS)
        if not self.registry.admit(self):
            self.shed()  # every place is taken by a request being answered

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_received = False
        if self.registry.stage_of(self) is Stage.IDLE:
            self.registry.enter(self, Stage.HEADERS)
        if self._deadline is None:  # a first request keeps the deadline set at connection
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if not self.pipeline:  # else it waits behind a request being answered
            self.registry.enter(self, Stage.BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_received = True
        if self.cycle is not None and self.cycle.response_complete:
            self._disarm()  # the rest of a body that came after its answer
            self.registry.enter(self, Stage.IDLE)
        elif not self.pipeline:
            self.registry.enter(self, Stage.HANDLING)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            self.registry.enter(self, Stage.CLOSING)
            return
        if not self.cycle.response_complete:
            return  # a pipelined request is now being answered
        if self._body_received:
            self.registry.enter(self, Stage.IDLE)
        else:
            self.registry.enter(self, Stage.BODY)
            self._arm(self.body_timeout)

    def timeout_keep_alive_handler(self) -> None:
        # abort, not close: an idle client gets no time to say goodbye over TLS
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.registry.leave(self)
        super().connection_lost(exc)


def guard_connections(settings: CollectorSettings) -> None:
    """Set this worker's deadlines and connection cap from the settings (`fleetwatch serve`
    has already raised the descriptor limit and said when the cap had to be lowered)."""
    budget = plan_budget(settings.max_connections)
    GuardedHttpToolsProtocol.header_timeout = settings.header_timeout
    GuardedHttpToolsProtocol.body_timeout = settings.body_timeout
    registry = ConnectionRegistry(cap=budget.cap)
    GuardedHttpToolsProtocol.registry = registry
    GuardedServers.registry = registry  # TLS connections count from before their handshake
    GuardedServers.handshake_timeout = settings.header_timeout
