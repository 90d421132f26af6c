"""The worker's event loop: TLS connections counted and cut from before their handshake, on
uvloop and on asyncio's own loop alike."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from fleetwatch.collector.web.connections import ConnectionRegistry, Stage
from fleetwatch.collector.web.loop import GuardedLoop, GuardedServers
from tests.tls import TestCA

BASES = {"uvloop": uvloop.Loop, "asyncio": asyncio.SelectorEventLoop}


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"echo:" + data)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = TestCA(tmp_path_factory.mktemp("ca"))
    issued = ca.issue("collector", ips=("127.0.0.1",))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(issued.cert, issued.key)
    client = ssl.create_default_context(cafile=str(ca.cert))
    return server, client


def run_on(
    base: str,
    registry: ConnectionRegistry,
    timeout: float,
    test: Callable[[], Awaitable[None]],
) -> None:
    loop_class = type(
        "TestLoop",
        (GuardedServers, BASES[base]),
        {"registry": registry, "handshake_timeout": timeout},
    )
    with asyncio.Runner(loop_factory=loop_class) as runner:
        runner.run(test())


def test_the_loop_named_to_uvicorn_is_uvloop_with_guarded_servers() -> None:
    assert issubclass(GuardedLoop, GuardedServers)
    assert issubclass(GuardedLoop, uvloop.Loop)


@pytest.mark.parametrize("base", BASES)
class TestGuardedServers:
    def test_tls_clients_are_served_after_their_handshake(
        self, base: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """A request sent right after the handshake, even in the same segment as its last
        message, reaches the protocol; the handshake stage is left once done."""
        server_context, client_context = contexts
        registry = ConnectionRegistry(cap=1000)

        async def test() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context)
            port = server.sockets[0].getsockname()[1]

            async def client(n: int) -> bytes:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context
                )
                writer.write(b"hello %d" % n)
                answer = await reader.readexactly(len(b"echo:hello %d" % n))
                writer.close()
                return answer

            answers = await asyncio.gather(*(client(n) for n in range(100)))
            assert answers == [b"echo:hello %d" % n for n in range(100)]
            assert registry.count(Stage.HANDSHAKE) == 0
            server.close()

        run_on(base, registry, 5.0, test)

    def test_a_handshake_that_never_starts_is_cut_at_the_deadline(
        self, base: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        server_context, _ = contexts
        registry = ConnectionRegistry(cap=1000)

        async def test() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.1)
            assert registry.count(Stage.HANDSHAKE) == 1
            started = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert loop.time() - started < 1.0
            assert len(registry) == 0
            writer.close()
            server.close()

        run_on(base, registry, 0.5, test)

    def test_handshakes_count_and_the_oldest_are_shed(
        self, base: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
    ) -> None:
        """Six connections that never start their handshake against a cap of four: the two
        oldest are closed for the newer ones."""
        server_context, _ = contexts
        registry = ConnectionRegistry(cap=4, headroom=0)

        async def test() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context)
            port = server.sockets[0].getsockname()[1]
            clients = []
            for _ in range(6):
                clients.append(await asyncio.open_connection("127.0.0.1", port))
                await asyncio.sleep(0.05)
            assert registry.count(Stage.HANDSHAKE) == 4

            async def closed(reader: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(), 0.3) == b""
                except TimeoutError:
                    return False
                except ConnectionError:
                    return True

            assert [await closed(reader) for reader, _ in clients] == [True] * 2 + [False] * 4
            for _, writer in clients:
                writer.close()
            server.close()

        run_on(base, registry, 30.0, test)

    def test_plain_servers_are_left_alone(self, base: str) -> None:
        registry = ConnectionRegistry(cap=1000)

        async def test() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"plain")
            assert await reader.readexactly(10) == b"echo:plain"
            assert len(registry) == 0
            writer.close()
            server.close()

        run_on(base, registry, 5.0, test)


@pytest.mark.parametrize("base", BASES)
def test_a_client_that_does_not_speak_tls_is_closed_at_once(
    base: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, _ = contexts
    registry = ConnectionRegistry(cap=1000)

    async def test() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = loop.time()
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)  # a TLS alert perhaps, then the end
        assert loop.time() - started < 1.0
        assert len(registry) == 0
        writer.close()
        server.close()

    run_on(base, registry, 30.0, test)
