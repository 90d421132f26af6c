"""One finding's whole case with the real agent on this machine and the real collector:
a port the test opens is found, acknowledged, waived until the waiver expires, closed,
resolved and verified; the unit's report holds it and the audit log every step."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import BIN, AgentProcess, CollectorProcess, wait_until

HOST = "response-agent"
POLICY = f"""
[defaults]
allowed_ports = ["tcp/22"]

[hosts."{HOST}"]
unit = "parks"

[units.parks]
title = "Parks and Gardens"
emails = ["it@parks.example.org"]

[due_days]
high = 7

[verification]
reports = 2
"""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    running = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'fleetwatch.db'}", policy).start()
    try:
        yield running
    finally:
        running.stop()


def api(
    collector: CollectorProcess, method: str, path: str, token: str | None = None, **kw: Any
) -> Any:
    response = requests.request(
        method,
        collector.url + path,
        headers={"Authorization": f"Bearer {token or collector.admin_token}"},
        timeout=10,
        **kw,
    )
    assert response.status_code == 200, response.text
    return response.json()


def cli(collector: CollectorProcess, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update({"FLEETWATCH_API_URL": collector.url, "FLEETWATCH_API_TOKEN": token})
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


def test_a_port_opened_on_this_machine_through_its_whole_case(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    """opened → acknowledged → waived → waiver expired (unwaived) → closed → resolved →
    verified, each step in the audit log; the unit's report lists it as fixed and verified."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))  # a non-loopback listener: what the rule flags
    listener.listen()
    subject = f"tcp/{listener.getsockname()[1]}"
    start = datetime.now(UTC)
    agent = AgentProcess(collector, tmp_path / "agent", HOST, tmp_path / "agent.log").start()
    try:

        def ours() -> dict[str, Any] | None:
            found = api(
                collector,
                "GET",
                "/api/v1/findings",
                params={"host_id": HOST, "rule": "allowed_ports"},
            )
            return next((f for f in found if f["key"] == subject), None)

        finding = wait_until("the port found", ours, timeout=120)
        parks = api(
            collector,
            "POST",
            "/api/v1/tokens",
            json={"name": "parks on call", "kind": "respond", "unit": "parks"},
        )["token"]
        cli(collector, parks, "ack", str(finding["id"]), "--note", "closing it today")
        expires = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
        cli(
            collector, collector.admin_token, "waive", "--host", HOST, "--rule", "allowed_ports",
            "--subject", subject, "--reason", "test service", "--owner", "parks IT", "--expires", expires,
        )  # fmt: skip
        wait_until("the waiver expired", lambda: not (ours() or {}).get("waived", True), timeout=60)
        listener.close()
        wait_until(
            "verified",
            lambda: (ours() or {"state": "?"})["state"] == "verified" or None,
            timeout=120,
        )
    finally:
        listener.close()
        agent.stop()
    history = api(collector, "GET", "/api/v1/audit", params={"finding_id": finding["id"]})
    assert [(e["kind"], e["actor"]) for e in history] == [
        ("opened", "collector"),
        ("acknowledged", "parks on call"),
        ("waived", "bootstrap admin"),
        ("unwaived", "collector"),
        ("resolved", "collector"),
        ("verified", "collector"),
    ]
    waiver_kinds = [
        e["kind"]
        for e in api(collector, "GET", "/api/v1/audit", params={"unit": "parks"})
        if e["kind"].startswith("waiver_")
    ]
    assert waiver_kinds == ["waiver_created", "waiver_expiring", "waiver_expired"]
    report = cli(
        collector, parks, "report", "unit", "parks", "--since", start.isoformat(), "--format", "csv"
    )
    sections = {
        r[0] for r in csv.reader(io.StringIO(report)) if len(r) > 1 and r[1] == str(finding["id"])
    }
    assert sections == {"fixed", "verified"}
