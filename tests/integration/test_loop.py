"""The monitoring loop with real processes: `fleetwatch serve` and `fleetwatch-agent run --once`."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import BIN, CollectorProcess, received

HOST = "loop-test-host"


def _listening_now() -> set[str]:
    """What this machine already listens on, outside loopback: the policy allows it all."""
    specs = set()
    for conn in psutil.net_connections(kind="inet"):
        if not conn.laddr or conn.laddr.ip.startswith("127.") or conn.laddr.ip == "::1":
            continue
        if conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN:
            specs.add(f"tcp/{conn.laddr.port}")
        elif conn.type == socket.SOCK_DGRAM and not conn.raddr:
            specs.add(f"udp/{conn.laddr.port}")
    return specs


@pytest.fixture
def collector(tmp_path: Path, database_url: str) -> Iterator[CollectorProcess]:
    policy = tmp_path / "policy.toml"
    allowed = ", ".join(f'"{s}"' for s in sorted(_listening_now()))
    # A baseline the rest of this machine satisfies: only ports are checked.
    policy.write_text(
        f"[defaults]\nallowed_ports = [{allowed}]\ncollection_errors = false\n"
        f'[hosts."{HOST}"]\nunit = "lab"\n'
    )
    process = CollectorProcess(tmp_path, database_url, policy).start()
    yield process
    process.stop()


def run_agent(collector: CollectorProcess, state: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(BIN / "fleetwatch-agent"), "run", "--once"],
        # debug: the "report sections" line says which sections went as their hash alone
        env=collector.agent_env(state, HOST, log_level="debug"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def fleetwatch(collector: CollectorProcess, *args: str) -> str:
    env = {
        "FLEETWATCH_API_URL": collector.url,
        "FLEETWATCH_API_TOKEN": collector.admin_token,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [str(BIN / "fleetwatch"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_unallowed_port_is_flagged_then_cleared(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    """A listener on a port the policy does not allow makes the host noncompliant; closing it
    and reporting again resolves the finding and makes the host compliant."""
    state = tmp_path / "agent"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        logs = run_agent(collector, state)
        assert any(line["event"] == "enrolled" for line in logs)

        host = collector.api(f"/api/v1/hosts/{HOST}")
        assert host["status"] == "noncompliant"
        (finding,) = [f for f in host["findings"] if f["rule"] == "allowed_ports"]
        assert finding["key"] == f"tcp/{port}"
        assert f"tcp/{port} is listening on 0.0.0.0" in finding["detail"]

        table = fleetwatch(collector, "hosts", "--noncompliant")
        assert HOST in table
        assert "noncompliant" in table

    logs = run_agent(collector, state)
    delivered = next(line for line in logs if line["event"] == "report sections")
    assert "packages" in delivered["hash_only"]  # unchanged since the acknowledged report

    host = collector.api(f"/api/v1/hosts/{HOST}")
    assert host["status"] == "compliant"
    assert host["findings"] == []
    (resolved,) = collector.api("/api/v1/findings", host_id=HOST, open="false")
    assert resolved["key"] == f"tcp/{port}"
    assert resolved["resolved_at"] is not None

    listing = json.loads(fleetwatch(collector, "findings", "--host", HOST, "--json"))
    assert [f["open"] for f in listing] == [False]
    reports = received(collector.api(f"/api/v1/hosts/{HOST}/reports"))
    assert [r["sequence"] for r in reports] == [1, 2]


def test_agent_run_loop_stops_cleanly_on_sigterm(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    """`fleetwatch-agent run` reports on its interval and exits 0 on SIGTERM."""
    import time

    env = collector.agent_env(tmp_path / "agent", HOST, interval="1", jitter="0")
    agent = subprocess.Popen(
        [str(BIN / "fleetwatch-agent"), "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reports = received(collector.api(f"/api/v1/hosts/{HOST}/reports"))
            if len(reports) >= 3:
                break
            time.sleep(0.5)
        assert len(reports) >= 3
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0
    assert '"event": "agent stopped"' in stderr
