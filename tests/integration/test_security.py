"""No one in where they don't belong, with the real collector and agent processes: TLS,
slow clients, and the token command line."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import BIN, CollectorProcess, clean_environment, received
from tests.tls import TestCA

HOST = "tls-test-host"
SYSTEM_STORE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture
def tls_collector(tmp_path: Path) -> Iterator[tuple[CollectorProcess, Path]]:
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("collector", dns=("localhost",), ips=("127.0.0.1",))
    collector = CollectorProcess(
        tmp_path, f"sqlite:///{tmp_path / 'tls.db'}", tls=(server.cert, server.key, ca.cert)
    ).start()
    yield collector, ca.cert
    collector.stop()


def run_agent(
    collector: CollectorProcess, state: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = collector.agent_env(state, HOST, **settings)
    # The environment of many machines names the system store for requests; a configured
    # CA bundle must still win.
    env["REQUESTS_CA_BUNDLE"] = SYSTEM_STORE
    return subprocess.run(
        [str(BIN / "fleetwatch-agent"), "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class TestTls:
    def test_agent_verifies_the_collector_against_its_ca(
        self,
        tls_collector: tuple[CollectorProcess, Path],
        tmp_path: Path,
    ) -> None:
        collector, ca = tls_collector
        done = run_agent(collector, tmp_path / "agent", ca_bundle=str(ca))
        assert done.returncode == 0, done.stderr[-2000:]
        assert collector.api(f"/api/v1/hosts/{HOST}")["status"] in {"compliant", "noncompliant"}

    def test_an_unknown_ca_is_refused_and_the_report_waits(
        self,
        tls_collector: tuple[CollectorProcess, Path],
        tmp_path: Path,
    ) -> None:
        """Against the system store the test CA is unknown: nothing is sent, the report stays
        spooled, and it is delivered once the right CA is configured."""
        collector, ca = tls_collector
        refused = run_agent(collector, tmp_path / "agent")
        assert refused.returncode == 1
        assert "TLS verification of https://127.0.0.1" in refused.stderr
        assert len(list((tmp_path / "agent" / "spool").glob("*.json.gz"))) == 1
        assert collector.api("/api/v1/hosts") == []
        accepted = run_agent(collector, tmp_path / "agent", ca_bundle=str(ca))
        assert accepted.returncode == 0
        reports = received(collector.api(f"/api/v1/hosts/{HOST}/reports"))
        assert [r["sequence"] for r in reports] == [1, 2]

    def test_admin_command_line_over_https(
        self,
        tls_collector: tuple[CollectorProcess, Path],
    ) -> None:
        collector, ca = tls_collector
        env = {
            "FLEETWATCH_API_URL": collector.url,
            "FLEETWATCH_API_TOKEN": collector.admin_token,
            "PATH": "/usr/bin:/bin",
            "REQUESTS_CA_BUNDLE": SYSTEM_STORE,
        }
        done = subprocess.run(
            [str(BIN / "fleetwatch"), "hosts", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1
        assert "cannot reach the collector" in done.stderr
        env["FLEETWATCH_CA_BUNDLE"] = str(ca)
        done = subprocess.run(
            [str(BIN / "fleetwatch"), "hosts", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(done.stdout) == []


@pytest.fixture(scope="class")
def strict_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector for the slow clients: each test's connection ends with the test."""
    tmp_path = tmp_path_factory.mktemp("slow")
    with clean_environment():
        collector = CollectorProcess(
            tmp_path,
            f"sqlite:///{tmp_path / 'slow.db'}",
            extra_env={"FLEETWATCH_HEADER_TIMEOUT": "1", "FLEETWATCH_BODY_TIMEOUT": "1"},
        ).start()
    yield collector
    collector.stop()


class TestSlowClients:
    def test_headers_that_trickle_in_are_cut_off(self, strict_collector: CollectorProcess) -> None:
        with socket.create_connection(("127.0.0.1", strict_collector.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the collector
            assert time.monotonic() - started < 5

    def test_a_connection_that_never_speaks_is_cut_off(
        self, strict_collector: CollectorProcess
    ) -> None:
        with socket.create_connection(("127.0.0.1", strict_collector.port), timeout=10) as sock:
            assert sock.recv(1024) == b""

    def test_a_body_that_trickles_in_gets_408(self, strict_collector: CollectorProcess) -> None:
        token = requests.post(
            strict_collector.url + "/api/v1/enroll",
            timeout=10,
            json={"host_id": "slow-01", "enroll_secret": strict_collector.enroll_secret},
        ).json()["token"]
        with socket.create_connection(("127.0.0.1", strict_collector.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                b"Authorization: Bearer " + token.encode() + b'\r\n\r\n{"schema'
            )
            answer = b""
            while b"not received" not in answer and (chunk := sock.recv(4096)):
                answer += chunk  # the body may come in a segment of its own
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"not received within 1 s" in answer

    def test_normal_clients_are_unaffected(self, strict_collector: CollectorProcess) -> None:
        session = requests.Session()
        for _ in range(3):
            assert session.get(strict_collector.url + "/healthz", timeout=5).ok
            time.sleep(0.2)


def test_token_command_line(tmp_path: Path) -> None:
    """Create, list and revoke API tokens; a unit token sees its unit only."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[hosts."a-01"]\nunit = "parks"\n[hosts."b-01"]\nunit = "water"\n')
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", policy).start()
    env = {
        "FLEETWATCH_API_URL": collector.url,
        "FLEETWATCH_API_TOKEN": collector.admin_token,
        "PATH": "/usr/bin:/bin",
    }

    def fleetwatch(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        call_env = {**env, "FLEETWATCH_API_TOKEN": token} if token else env
        return subprocess.run(
            [str(BIN / "fleetwatch"), *args],
            env=call_env,
            capture_output=True,
            text=True,
            check=False,
        )

    try:
        made = fleetwatch(
            "token", "create", "--name", "parks staff", "--kind", "read", "--unit", "parks"
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("fwa_")
        assert "shown once" in made.stderr
        listing = fleetwatch("token", "list")
        assert "parks staff" in listing.stdout
        assert token not in listing.stdout
        hosts = json.loads(fleetwatch("hosts", "--json", token=token).stdout)
        assert [h["host_id"] for h in hosts] == ["a-01"]
        listed = json.loads(fleetwatch("token", "list", "--json").stdout)
        # the collector's own tokens from its environment are listed too, without an id
        (token_id,) = [t["id"] for t in listed if t["name"] == "parks staff"]
        assert fleetwatch("token", "revoke", str(token_id)).returncode == 0
        refused = fleetwatch("hosts", token=token)
        assert refused.returncode == 1
        assert "API token not accepted" in refused.stderr
    finally:
        collector.stop()


def test_agent_rotates_its_token_without_a_gap(tmp_path: Path) -> None:
    """`fleetwatch-agent rotate-token`: reports go on with the new token; the old one stops
    working once the new one has been used."""
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'rotate.db'}").start()
    state = tmp_path / "agent"
    env = collector.agent_env(state, "rotating-01")
    agent = [str(BIN / "fleetwatch-agent")]
    try:
        assert (
            subprocess.run(
                [*agent, "run", "--once"], env=env, check=False, capture_output=True
            ).returncode
            == 0
        )
        old = (state / "token").read_text().strip()
        rotated = subprocess.run(
            [*agent, "rotate-token"], env=env, capture_output=True, text=True, check=False
        )
        assert rotated.returncode == 0, rotated.stderr
        assert "host token of rotating-01 rotated" in rotated.stdout
        new = (state / "token").read_text().strip()
        assert new != old
        assert oct((state / "token").stat().st_mode & 0o777) == "0o600"
        assert (
            subprocess.run(
                [*agent, "run", "--once"], env=env, check=False, capture_output=True
            ).returncode
            == 0
        )
        refused = requests.post(
            collector.url + "/api/v1/report",
            data=b"{}",
            timeout=10,
            headers={"Authorization": f"Bearer {old}"},
        )
        assert refused.status_code == 401
        reports = received(collector.api("/api/v1/hosts/rotating-01/reports"))
        assert [r["sequence"] for r in reports] == [1, 2]
    finally:
        collector.stop()
