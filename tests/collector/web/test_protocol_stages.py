"""The guarded protocol in a real uvicorn server: each connection's stage in the registry, the
header deadline from the connection's opening, the rest of a refused body cut at
body_timeout, and idle connections shed for new ones."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import pytest
import uvicorn

from fleetwatch.collector.web.connections import ConnectionRegistry, Stage
from fleetwatch.collector.web.protocol import GuardedHttpToolsProtocol

release = threading.Event()


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """``/refuse`` answers at once, body unread; ``/hold`` reads the body and answers when the
    test releases it; anything else answers ``ok``."""
    if scope["path"] == "/hold":
        while (await receive()).get("more_body"):
            pass
        await asyncio.to_thread(release.wait, 10)
    status = 401 if scope["path"] == "/refuse" else 200
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Server:
    def __init__(self, registry: ConnectionRegistry, header_timeout: float, body_timeout: float):
        protocol = type(
            "Protocol",
            (GuardedHttpToolsProtocol,),
            {"registry": registry, "header_timeout": header_timeout, "body_timeout": body_timeout},
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, http=protocol, lifespan="off", log_level="warning"
        )
        self.registry = registry
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        release.set()
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stages(self) -> dict[str, int]:
        return {
            stage.value: self.registry.count(stage) for stage in Stage if self.registry.count(stage)
        }

    def wait_for(self, stages: dict[str, int]) -> None:
        deadline = time.monotonic() + 5
        while self.stages() != stages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.stages() == stages


@pytest.fixture
def server() -> Iterator[Server]:
    release.clear()
    with Server(ConnectionRegistry(cap=100), header_timeout=1.0, body_timeout=0.5) as running:
        yield running


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


class TestStages:
    def test_a_request_goes_through_every_stage(self, server: Server) -> None:
        with server.connect() as sock:
            server.wait_for({"headers": 1})
            sock.sendall(b"POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
            server.wait_for({"body": 1})
            sock.sendall(b"cd")
            server.wait_for({"handling": 1})
            release.set()
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            server.wait_for({"idle": 1})
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            server.wait_for({"headers": 1})
        server.wait_for({})

    def test_shed_idle_connections_are_closed(self) -> None:
        release.clear()
        with Server(ConnectionRegistry(cap=2, headroom=0), 5.0, 5.0) as server:
            idle = server.connect()
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(4096).startswith(b"HTTP/1.1 200")
            busy = server.connect()
            busy.sendall(b"POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            server.wait_for({"idle": 1, "handling": 1})
            newcomer = server.connect()
            assert closed_within(idle, 2)
            newcomer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert newcomer.recv(4096).startswith(b"HTTP/1.1 200")
            release.set()
            assert busy.recv(4096).startswith(b"HTTP/1.1 200")
            for sock in (idle, busy, newcomer):
                sock.close()


class TestDeadlines:
    def test_the_first_request_counts_from_the_connection(self, server: Server) -> None:
        """A client that waits, then starts its headers, has what is left of header_timeout."""
        with server.connect() as sock:
            time.sleep(0.7)
            sock.sendall(b"GET / HTTP/1.1\r\n")
            started = time.monotonic()
            assert closed_within(sock, 3)
            assert time.monotonic() - started < 0.6

    def test_the_rest_of_a_refused_body_gets_body_timeout(self, server: Server) -> None:
        """Answered before its body came, a request that never sends the rest is closed after
        body_timeout rather than kept alive for as long as it trickles."""
        with server.connect() as sock:
            sock.sendall(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
            assert sock.recv(4096).startswith(b"HTTP/1.1 401")
            server.wait_for({"body": 1})
            started = time.monotonic()
            for _ in range(20):
                time.sleep(0.05)
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
            assert closed_within(sock, 3)
            assert time.monotonic() - started < 1.5

    def test_the_rest_of_a_refused_body_that_arrives_keeps_the_connection(
        self, server: Server
    ) -> None:
        with server.connect() as sock:
            sock.sendall(b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
            assert sock.recv(4096).startswith(b"HTTP/1.1 401")
            sock.sendall(b"cd")
            server.wait_for({"idle": 1})
            time.sleep(0.8)  # past body_timeout: nothing is pending any more
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
