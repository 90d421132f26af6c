"""The event loop of a collector worker: TLS handshakes in the connection budget, cut at the
header deadline.

Left to the event loop, a TLS connection reaches the HTTP protocol only once its handshake is
done: until then it is in no count and under no deadline of ours (the loop's own lets a client
that never starts its handshake hold the connection 60 seconds), so a flood of them takes every
file descriptor. `GuardedLoop`, which `fleetwatch serve` names to uvicorn as its loop factory,
serves a TLS listener as a plain one whose connections start as a `TlsHandshake`: entered in
the worker's `ConnectionRegistry` at once (stage ``handshake``, shed like slow headers), given
``header_timeout`` to finish the handshake, then handed to the HTTP protocol over TLS. Closing
a TLS connection waits at most as long for the client's goodbye (``close_notify``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from fleetwatch.collector.web.connections import ConnectionRegistry, Stage

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    BaseLoop = asyncio.SelectorEventLoop
    MixedInto = asyncio.SelectorEventLoop
else:
    MixedInto = object
    try:
        from uvloop import Loop as BaseLoop
    except ImportError:  # uvloop is optional (uvicorn[standard] brings it on Linux)
        BaseLoop = asyncio.SelectorEventLoop


class _HandOver(asyncio.Protocol):
    """Stands in for the HTTP protocol from the end of a handshake to the hand-over: what the
    client sent with its handshake's last message is kept for the HTTP protocol."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.eof = False
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def eof_received(self) -> None:
        self.eof = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def hand_over(self, protocol: asyncio.Protocol, transport: asyncio.Transport) -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self.received:
            if transport.is_closing():  # refused or cut: the rest is of no use
                break
            protocol.data_received(data)
        if self.eof and not transport.is_closing():
            protocol.eof_received()
        for exc in self.lost:
            protocol.connection_lost(exc)


class TlsHandshake(asyncio.Protocol):
    """A TLS connection until its handshake is done, counted in the registry meanwhile."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeout: float,
        registry: ConnectionRegistry,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._context = context
        self._timeout = timeout
        self._registry = registry
        self._raw: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._registry.enter(self, Stage.HANDSHAKE)
        if self._registry.admit(self):
            self._task = self._loop.create_task(self._handshake(transport))
        else:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        # uvloop starts reading once connection_made returns, whatever it asked: the start of
        # the client's handshake can come before start_tls holds the transport
        self._early.append(data)
        if self._raw is not None:
            self._raw.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        # only until start_tls takes the transport over
        self._registry.leave(self)
        if self._task is not None:
            self._task.cancel()

    def shed(self) -> None:
        """Close the connection, its handshake unfinished: the registry needs its place."""
        if self._raw is not None:
            self._raw.abort()  # start_tls then fails, and the task ends

    async def _handshake(self, raw: asyncio.Transport) -> None:
        waiting = _HandOver()
        if self._early:
            # start_tls puts its TLS layer in our place at once and starts it (connection_made)
            # on the loop's next turn: this runs on that turn, first
            self._loop.call_soon(self._replay_early, raw)
        try:
            tls = await self._loop.start_tls(
                raw,
                waiting,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
                ssl_shutdown_timeout=self._timeout,
            )
        except OSError:  # a failed handshake, too slow, or the client gone
            raw.abort()
            return
        finally:
            self._registry.leave(self)
        if tls is None:  # not with a server-side context; for the type checker
            raw.abort()
            return
        waiting.hand_over(self._protocol_factory(), tls)

    def _replay_early(self, raw: asyncio.Transport) -> None:
        """Give the TLS layer what reached us before it: TLS protocols keep what they receive
        before their connection_made, and the handshake starts with it."""
        if raw.is_closing():
            return
        tls_layer = raw.get_protocol()
        data, self._early = b"".join(self._early), []
        if isinstance(tls_layer, asyncio.Protocol):
            tls_layer.data_received(data)
            return
        while data:  # a buffered protocol (both loops' TLS layers are)
            buffer = memoryview(tls_layer.get_buffer(len(data)))  # type: ignore[attr-defined]
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            tls_layer.buffer_updated(size)  # type: ignore[attr-defined]
            data = data[size:]


class GuardedServers(MixedInto):
    """The servers of `GuardedLoop`, on whichever event loop it is mixed into: TLS connections
    are counted and cut from before their handshake (see the module's docstring)."""

    # set by protocol.guard_connections: the header deadline, and the worker's registry
    handshake_timeout: ClassVar[float] = 10.0
    registry: ClassVar[ConnectionRegistry] = ConnectionRegistry(cap=1 << 30)

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.Protocol], *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        context: ssl.SSLContext | None = kwargs.pop("ssl", None)
        if context is None:
            return await super().create_server(protocol_factory, *args, **kwargs)
        timeout = kwargs.pop("ssl_handshake_timeout", None) or self.handshake_timeout
        kwargs.pop("ssl_shutdown_timeout", None)

        def handshake() -> TlsHandshake:
            return TlsHandshake(self, protocol_factory, context, timeout, self.registry)

        return await super().create_server(handshake, *args, **kwargs)


class GuardedLoop(GuardedServers, BaseLoop):
    """uvloop's event loop where installed, else asyncio's, with `GuardedServers`."""
