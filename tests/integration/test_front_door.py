"""What a client without a token can cost, with the real `fleetwatch serve` (two workers) on
SQLite and PostgreSQL: oversized and slow bodies on the admin endpoints are refused from
their headers, memory stays bounded, and /healthz keeps answering."""

from __future__ import annotations

import contextlib
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import CollectorProcess

pytestmark = pytest.mark.slow

MIB = 1 << 20
# Every process of the collector (the supervisor, its helper, each worker) stays under this
# while the attack runs; idle, each holds about 75-90 MB on the machine the figure was taken.
RSS_LIMIT = 150 * MIB
ATTACKERS = 50
DECLARED = 200 * MIB  # what an attacker's Content-Length claims
SENDS_UP_TO = 100 * MIB  # what each attacker tries to push through
BODY_TIMEOUT = 2.0
ATTACK_SECONDS = 5.0  # each attacker starts again as soon as it is answered, for this long
ADMIN_PATHS = ("/api/v1/tokens", "/api/v1/hosts/x/allow-reenroll")


@pytest.fixture
def collector(tmp_path: Path, database_url: str) -> Iterator[CollectorProcess]:
    process = CollectorProcess(
        tmp_path,
        database_url,
        extra_env={"FLEETWATCH_WORKERS": "2", "FLEETWATCH_BODY_TIMEOUT": str(BODY_TIMEOUT)},
    ).start()
    yield process
    process.stop()


@dataclass
class Memory:
    """The resident memory of every process of the collector, sampled in a thread."""

    pid: int
    limit: int
    peak: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    over: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        root = psutil.Process(self.pid)
        while not self.done.is_set():
            total = 0
            for process in [root, *root.children(recursive=True)]:
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                key = f"{process.pid} {process.name()}"
                self.peak[key] = max(self.peak.get(key, 0), rss)
                total += rss
                if rss > self.limit:
                    self.over.set()  # stop the attack: the test failed, spare the machine
            self.peak_total = max(self.peak_total, total)
            time.sleep(0.05)


@dataclass
class Health:
    """/healthz asked again and again, its latencies kept."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def probe(self) -> None:
        session = requests.Session()
        while not self.done.is_set():
            started = time.monotonic()
            try:
                ok = session.get(self.url + "/healthz", timeout=10).status_code == 200
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
            else:
                if ok:
                    self.latencies.append(time.monotonic() - started)
                else:
                    self.failures.append("not 200")
            time.sleep(0.1)


@dataclass
class Outcome:
    status: int | None
    seconds: float
    sent: int


def attack(
    port: int, path: str, *, chunked: bool, stop: threading.Event, token: str | None = None
) -> Outcome:
    """POST a huge body to ``path``, pushing it as fast as the collector takes it, until an
    answer comes (or ``SENDS_UP_TO`` is sent, or ``stop``)."""
    started = time.monotonic()
    head = f"POST {path} HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {DECLARED}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    piece = b"[" + b"0," * (MIB // 2 - 1) + b"0"  # valid-looking JSON as long as it lasts
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    stream = memoryview(piece)
    answer = b""
    sent = 0
    writing = True
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        sock.setblocking(False)
        while time.monotonic() - started < 120 and not stop.is_set():
            want_write = [sock] if writing and sent < SENDS_UP_TO else []
            readable, writable, _ = select.select([sock], want_write, [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
            elif writable:
                try:
                    sent += sock.send(stream[sent % len(piece) :])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:  # closed by the collector: the answer may still be readable
                    writing = False
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return Outcome(status, time.monotonic() - started, sent)


def again_and_again(
    port: int, path: str, *, chunked: bool, stop: threading.Event, token: str | None
) -> list[Outcome]:
    """`attack` again as soon as it is answered, for ATTACK_SECONDS."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    while time.monotonic() - started < ATTACK_SECONDS and not stop.is_set():
        outcomes.append(attack(port, path, chunked=chunked, stop=stop, token=token))
    return outcomes


def under_attack(
    collector: CollectorProcess, *jobs: tuple[str, bool, str | None]
) -> tuple[list[Outcome], Memory, Health]:
    """Run the attacks of ``jobs`` (path, chunked, token) all at once and again and again,
    with memory and /healthz watched meanwhile."""
    assert collector.process is not None
    memory = Memory(collector.process.pid, RSS_LIMIT)
    health = Health(collector.url)
    watchers = [threading.Thread(target=memory.sample), threading.Thread(target=health.probe)]
    for watcher in watchers:
        watcher.start()
    time.sleep(0.5)  # a baseline for both
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [
                pool.submit(
                    again_and_again,
                    collector.port,
                    path,
                    chunked=chunked,
                    stop=memory.over,
                    token=token,
                )
                for path, chunked, token in jobs
            ]
            outcomes = [o for f in futures for o in f.result()]
        time.sleep(0.5)
    finally:
        memory.done.set()
        health.done.set()
        for watcher in watchers:
            watcher.join()
    print(  # the figures docs/security.md states
        f"\npeak RSS per process (MiB): { {k: v // MIB for k, v in memory.peak.items()} }; "
        f"all together {memory.peak_total // MIB} MiB"
        f"\n/healthz: {len(health.latencies)} answers, median "
        f"{statistics.median(health.latencies) * 1000:.0f} ms, slowest "
        f"{max(health.latencies) * 1000:.0f} ms; failures {health.failures}"
        f"\n{len(outcomes)} attacks answered within {max(o.seconds for o in outcomes):.2f} s, "
        f"having pushed at most {max(o.sent for o in outcomes) / MIB:.1f} MiB each"
    )
    return outcomes, memory, health


def test_bodies_without_a_token_are_refused_unread(collector: CollectorProcess) -> None:
    """Fifty clients with no token post 200 MB bodies (declared or chunked) to admin
    endpoints, again and again: each gets 401 at once, no body is read, every process of the
    collector stays under RSS_LIMIT, and /healthz answers all along."""
    jobs = [(ADMIN_PATHS[n % 2], n % 4 >= 2, None) for n in range(ATTACKERS)]
    outcomes, memory, health = under_attack(collector, *jobs)
    assert not memory.over.is_set(), f"over {RSS_LIMIT // MIB} MiB: {memory.peak}"
    assert {o.status for o in outcomes} == {401}
    assert len(outcomes) >= ATTACKERS
    assert max(o.seconds for o in outcomes) < 5
    assert max(o.sent for o in outcomes) < 10 * MIB  # the socket's buffers, not the body
    assert health.failures == []
    assert max(health.latencies) < 1.0


def test_an_admin_cannot_send_a_huge_or_endless_body(collector: CollectorProcess) -> None:
    """With an admin token: a body declared too large is refused with 413 at once, one sent
    too large (chunked) with 413 at the limit, and one that trickles with 408 within
    body_timeout; memory stays bounded and /healthz answers meanwhile."""
    token = collector.admin_token
    jobs = [
        ("/api/v1/tokens", False, token),
        ("/api/v1/tokens", True, token),
        ("/api/v1/hosts/x/allow-reenroll", False, token),
        ("/api/v1/hosts/x/allow-reenroll", True, token),
    ]
    trickled: list[tuple[bytes, float]] = []
    trickler = threading.Thread(target=lambda: trickled.append(trickle(collector, token)))
    trickler.start()
    outcomes, memory, health = under_attack(collector, *jobs)
    trickler.join()
    assert not memory.over.is_set(), f"over {RSS_LIMIT // MIB} MiB: {memory.peak}"
    assert {o.status for o in outcomes} == {413}
    assert max(o.seconds for o in outcomes) < 5
    (answer, seconds), *_ = trickled
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 2 s" in answer
    assert BODY_TIMEOUT - 0.1 <= seconds < BODY_TIMEOUT + 2
    assert health.failures == []
    assert max(health.latencies) < 1.0


def trickle(collector: CollectorProcess, token: str) -> tuple[bytes, float]:
    """POST /api/v1/tokens a byte every half second; the answer and when it came."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: collector\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\n\r\n"
        )
        started = time.monotonic()
        sock.setblocking(False)
        answer = b""
        while time.monotonic() - started < 60:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                data = sock.recv(4096)
                answer += data
                if not data or b"not received" in answer:
                    break
            else:
                with contextlib.suppress(OSError):
                    sock.send(b" ")
        return answer, time.monotonic() - started
