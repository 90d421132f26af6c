"""The connection budget with the real collector process: thousands of idle and slow
connections and a descriptor limit lower than the connections tried, while a well-behaved
client keeps getting answers; TLS handshakes that never start are cut at the header deadline.

Run with ``-s`` to see the well-behaved client's latency under attack.
"""

from __future__ import annotations

import json
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import CollectorProcess, make_report
from tests.tls import TestCA

pytestmark = pytest.mark.slow

HOLD = 30  # header and body deadlines while a crowd is held: longer than each test
FLOOD_ENV = {
    "FLEETWATCH_HEADER_TIMEOUT": str(HOLD),
    "FLEETWATCH_BODY_TIMEOUT": str(HOLD),
    # the crowd's slow bodies all come from 127.0.0.1: let enrollment's rate limit pass them
    "FLEETWATCH_ENROLL_RATE": "100000",
    "FLEETWATCH_ENROLL_BURST": "100000",
}


@pytest.fixture(autouse=True)
def _enough_descriptors() -> Iterator[None]:
    """This process holds the crowd's sockets: raise its soft limit (its collectors inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8000
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return head


class Crowd:
    """Connections held open against the collector, in turn of three kinds: bare (never a
    byte), idle keep-alive (one request answered, then silence) and slow bodies (headers and
    the first byte of a 1,000-byte body)."""

    KINDS = ("bare", "idle", "slow body")

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.failed: list[str] = []

    def open(self, count: int) -> None:
        for _ in range(count):
            kind = self.KINDS[len(self.sockets) % len(self.KINDS)]
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                self.sockets.append(sock)
                if kind == "idle":
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: crowd\r\n\r\n")
                    _read_response(sock)
                elif kind == "slow body":
                    sock.sendall(
                        b"POST /api/v1/enroll HTTP/1.1\r\nHost: crowd\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                    )
            except OSError as exc:
                self.failed.append(f"{kind}: {exc!r}")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


class WellBehavedClient:
    """Asks as an agent or an operator would, each request on a new connection; keeps what
    every request got and how long it took."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.answers: list[str] = []
        self.seconds: list[float] = []
        self.token: str | None = None
        self.sequence = 0

    def _timed(self, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = requests.request(
                method,
                self.collector.url + path,
                timeout=HOLD,
                verify=self.collector.verify,
                **kwargs,
            )
        except requests.RequestException as exc:
            self.answers.append(f"{method} {path}: {type(exc).__name__}")
            return None
        finally:
            self.seconds.append(time.monotonic() - started)
        self.answers.append(f"{method} {path}: {response.status_code}")
        return response

    def healthz(self) -> None:
        self._timed("GET", "/healthz")

    def enroll(self, host_id: str) -> None:
        response = self._timed(
            "POST",
            "/api/v1/enroll",
            json={"host_id": host_id, "enroll_secret": self.collector.enroll_secret},
        )
        assert response is not None, self.answers[-1]
        self.token = response.json()["token"]

    def report(self, host_id: str) -> None:
        self.sequence += 1
        self._timed(
            "POST",
            "/api/v1/report",
            json=make_report(host_id, self.sequence),
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def refused(self) -> list[str]:
        return [a for a in self.answers if not a.endswith((": 200", ": 201"))]

    def latency(self) -> str:
        ordered = sorted(self.seconds)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (
            f"{len(ordered)} requests, p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, slowest {ordered[-1] * 1000:.1f} ms"
        )


def log_events(collector: CollectorProcess, event: str) -> list[dict[str, Any]]:
    events = []
    for line in collector.log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                events.append(record)
    return events


def open_descriptors(collector: CollectorProcess) -> int:
    assert collector.process is not None
    return len(list(Path(f"/proc/{collector.process.pid}/fd").iterdir()))


LOWERED = "connection cap lowered to fit the file descriptor limit"
SHED = "connections shed to stay within the cap"


def test_a_low_descriptor_limit_lowers_the_cap_and_normal_clients_still_get_answers(
    tmp_path: Path, database_url: str
) -> None:
    """With 512 descriptors (no LimitNOFILE in the unit would give 1,024), 1,200 idle and slow
    connections do not take the last descriptor: the collector sheds them and says so."""
    collector = CollectorProcess(tmp_path, database_url, extra_env=FLOOD_ENV)
    collector.args = ["prlimit", "--nofile=512:512", "--", *collector.args]
    collector.start()
    crowd = Crowd(collector.port)
    client = WellBehavedClient(collector)
    try:
        client.enroll("budget-01")
        for _ in range(24):
            crowd.open(50)
            client.healthz()
            client.report("budget-01")
        for _ in range(20):
            client.healthz()
        descriptors = open_descriptors(collector)
    finally:
        crowd.close()
        collector.stop()
    print(f"\nunder 1,200 connections with 512 descriptors: {client.latency()}")
    assert client.refused() == []
    assert descriptors < 512
    [lowered] = log_events(collector, LOWERED)
    assert lowered["max_connections"] == 4096
    assert lowered["descriptor_limit"] == 512
    assert 0 < lowered["cap"] < 512 - 128
    shed = log_events(collector, SHED)
    assert shed, "shedding is logged"
    assert len(shed) < 10, "one line per interval, not one per connection"


def test_a_soft_limit_below_the_hard_one_is_raised(tmp_path: Path) -> None:
    """Soft 512 under this machine's hard limit: raised to what 4,096 connections need, so the
    cap stays whole and nothing is logged."""
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'raise.db'}")
    collector.args = ["prlimit", f"--nofile=512:{hard_limit}", "--", *collector.args]
    collector.start()
    try:
        assert collector.process is not None
        limits = Path(f"/proc/{collector.process.pid}/limits").read_text()
        [soft, hard] = next(
            line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")
        )
    finally:
        collector.stop()
    assert int(soft) > 4096
    assert int(soft) < int(hard) == hard_limit
    assert log_events(collector, LOWERED) == []


def test_too_few_descriptors_stop_the_collector_with_the_figure(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'few.db'}")
    done = subprocess.run(
        ["prlimit", "--nofile=150:150", "--", *collector.args],
        env=collector.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "may open 150 files" in done.stderr


def test_thousands_of_idle_and_slow_connections_leave_room_for_normal_clients(
    tmp_path: Path, database_url: str
) -> None:
    """3,000 connections held open (1,000 bare, 1,000 idle keep-alive, 1,000 slow bodies)
    against a cap of 2,500: 50 health checks and 20 reports are all answered, none with 503."""
    collector = CollectorProcess(
        tmp_path, database_url, extra_env={**FLOOD_ENV, "FLEETWATCH_MAX_CONNECTIONS": "2500"}
    ).start()
    crowd = Crowd(collector.port)
    client = WellBehavedClient(collector)
    try:
        client.enroll("crowded-01")
        started = time.monotonic()
        crowd.open(3000)
        opened = time.monotonic() - started
        for turn in range(50):
            client.healthz()
            if turn % 5 == 0:
                client.report("crowded-01")
                client.report("crowded-01")
        held = open_descriptors(collector)
        assert crowd.failed == []
    finally:
        crowd.close()
        collector.stop()
    print(
        f"\n3,000 connections opened in {opened:.1f} s, {held} descriptors held by the "
        f"collector; the well-behaved client: {client.latency()}"
    )
    assert client.refused() == []
    assert len(client.answers) == 71  # enrollment, 50 health checks, 20 reports
    assert max(client.seconds) < HOLD
    assert held > 2000, "the collector holds thousands, shedding only past its threshold"
    assert log_events(collector, SHED)


@pytest.fixture
def tls_collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("collector", dns=("localhost",), ips=("127.0.0.1",))
    collector = CollectorProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'tls.db'}",
        tls=(server.cert, server.key, ca.cert),
        extra_env={"FLEETWATCH_HEADER_TIMEOUT": "2"},
    ).start()
    yield collector
    collector.stop()


def test_a_tls_handshake_that_never_starts_is_cut_at_the_header_deadline(
    tls_collector: CollectorProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", tls_collector.port), timeout=30) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the collector
        assert time.monotonic() - started < 2 + 3
    assert requests.get(tls_collector.url + "/healthz", timeout=5, verify=tls_collector.verify).ok


def test_a_flood_of_tls_handshakes_stays_within_the_budget(tmp_path: Path) -> None:
    """1,200 TLS connections that never start their handshake against 512 descriptors: the
    handshakes are connections like any other, shed oldest first, and an HTTPS client still
    gets answers."""
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("collector", dns=("localhost",), ips=("127.0.0.1",))
    collector = CollectorProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'tls.db'}",
        tls=(server.cert, server.key, ca.cert),
        extra_env=FLOOD_ENV,
    )
    collector.args = ["prlimit", "--nofile=512:512", "--", *collector.args]
    collector.start()
    sockets: list[socket.socket] = []
    client = WellBehavedClient(collector)
    try:
        for _ in range(24):
            sockets += [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(50)]
            client.healthz()
        descriptors = open_descriptors(collector)
    finally:
        for sock in sockets:
            sock.close()
        collector.stop()
    print(f"\nunder 1,200 TLS handshakes with 512 descriptors: {client.latency()}")
    assert client.refused() == []
    assert descriptors < 512
