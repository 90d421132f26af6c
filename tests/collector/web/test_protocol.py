"""GuardedHttpToolsProtocol against the uvicorn installed: the private hooks it overrides are
still there, and a client trickling header bytes is still cut off.

protocol.py subclasses uvicorn's private ``HttpToolsProtocol`` (hence the cap on uvicorn in
pyproject.toml). When uvicorn changes that class, these tests say what changed.
"""

from __future__ import annotations

import asyncio
import inspect
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from fleetwatch.collector.web.protocol import GuardedHttpToolsProtocol

REVISIT = (
    "uvicorn {version} changed HttpToolsProtocol: {what}. "
    "GuardedHttpToolsProtocol (collector/web/protocol.py) relies on it to cut slow headers: "
    "revisit protocol.py, then the uvicorn cap in pyproject.toml."
)

# The hooks protocol.py overrides, with the parameters it passes on to uvicorn's.
HOOKS = {
    "connection_made": ["self", "transport"],
    "on_message_begin": ["self"],
    "on_headers_complete": ["self"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "timeout_keep_alive_handler": ["self"],
    "connection_lost": ["self", "exc"],
}
# Attributes of uvicorn's protocol that protocol.py reads (set in __init__ or per request).
ATTRIBUTES = ("cycle", "pipeline")


def revisit(what: str) -> str:
    return REVISIT.format(version=uvicorn.__version__, what=what)


class TestUvicornStillFits:
    @pytest.mark.parametrize("hook", sorted(HOOKS))
    def test_the_hooks_it_overrides_are_uvicorns_with_the_same_parameters(self, hook: str) -> None:
        """Each overridden hook is defined by HttpToolsProtocol itself, with the same parameters."""
        # defined on the class itself: connection_made and connection_lost also exist on
        # asyncio.Protocol, where an override would no longer run uvicorn's code
        assert hook in vars(HttpToolsProtocol), revisit(f"it no longer defines {hook}()")
        parameters = list(inspect.signature(vars(HttpToolsProtocol)[hook]).parameters)
        assert parameters == HOOKS[hook], revisit(
            f"{hook}() now takes {parameters}, not {HOOKS[hook]}"
        )

    def test_the_attributes_it_reads_are_still_set(self) -> None:
        """A new protocol still has the per-request attributes protocol.py reads."""
        config = uvicorn.Config(_app, http=GuardedHttpToolsProtocol, lifespan="off")
        config.load()
        # a loop of its own: whether the main thread has a current loop depends on the tests
        # that ran before this one in the same process
        loop = asyncio.new_event_loop()
        try:
            protocol = HttpToolsProtocol(
                config=config, server_state=ServerState(), app_state={}, _loop=loop
            )
        finally:
            loop.close()
        for name in ATTRIBUTES:
            assert hasattr(protocol, name), revisit(f"it no longer sets self.{name}")

    def test_it_still_has_a_loop_and_a_transport(self) -> None:
        """After connection_made the protocol has self.loop (its loop) and self.transport."""
        config = uvicorn.Config(_app, http=GuardedHttpToolsProtocol, lifespan="off")
        config.load()
        left, right = socket.socketpair()

        async def connect() -> tuple[GuardedHttpToolsProtocol, dict[str, bool]]:
            loop = asyncio.get_running_loop()
            try:
                transport, protocol = await loop.connect_accepted_socket(
                    lambda: GuardedHttpToolsProtocol(
                        config=config, server_state=ServerState(), app_state={}
                    ),
                    sock=left,
                )
            except TypeError as exc:
                pytest.fail(
                    revisit(f"its constructor refuses config, server_state, app_state: {exc}")
                )
            seen = {
                "loop": getattr(protocol, "loop", None) is loop,
                "transport": getattr(protocol, "transport", None) is transport,
                "armed": protocol._deadline is not None,
            }
            transport.close()
            await asyncio.sleep(0)  # connection_lost runs on the loop's next turn
            return protocol, seen

        try:
            protocol, seen = asyncio.run(connect())
        finally:
            right.close()
        assert seen["loop"], revisit("self.loop is not the event loop it runs on")
        assert seen["transport"], revisit(
            "connection_made() no longer keeps the transport in self.transport"
        )
        assert seen["armed"], "connection_made() did not start the header deadline"
        assert protocol._deadline is None, "connection_lost() left the deadline running"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def guarded_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A real uvicorn server with the guarded protocol and a 1 s header deadline; its port."""
    monkeypatch.setattr(GuardedHttpToolsProtocol, "header_timeout", 1.0)
    config = uvicorn.Config(
        _app, http=GuardedHttpToolsProtocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


class TestSlowHeaders:
    def test_a_client_trickling_header_bytes_is_cut_after_header_timeout(
        self, guarded_server: int
    ) -> None:
        """Header lines every 0.2 s keep the connection busy, yet it closes after about 1 s."""
        with socket.create_connection(("127.0.0.1", guarded_server), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            sent = 0
            answer = None
            while time.monotonic() - started < 5:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    answer = sock.recv(1024)
                    break
                try:
                    sock.sendall(b"X-Slow: %d\r\n" % sent)
                except (BrokenPipeError, ConnectionResetError):
                    answer = b""
                    break
                sent += 1
            elapsed = time.monotonic() - started
        assert answer == b"", f"expected the connection closed, got {answer!r}"
        assert 0.9 <= elapsed < 3, elapsed
        assert sent >= 3  # it was still sending when it was cut

    def test_a_prompt_request_is_answered(self, guarded_server: int) -> None:
        """Headers sent at once are answered; a kept-alive connection idle between requests
        for longer than header_timeout is not cut (the deadline runs from a request's start)."""
        with socket.create_connection(("127.0.0.1", guarded_server), timeout=5) as sock:
            for pause in (1.5, 0):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"\r\n\r\nok") and (chunk := sock.recv(1024)):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer
                time.sleep(pause)
