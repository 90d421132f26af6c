"""The response loop end to end, with a real collector, a real agent and real receivers: a
finding is opened on the host, its unit is told by e-mail and webhook, it is acknowledged with
a note, waived until an expiry, told again when the waiver expires, fixed on the host,
resolved, verified; it shows in the unit's report for the period, and the audit log holds
every step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.collector.notifications.conftest import SECRET, hook_table, smtp_table
from tests.collector.notifications.receivers import SmtpReceiver, WebhookReceiver
from tests.helpers import BIN, AgentProcess, CollectorProcess, free_port, wait_until
from tests.tls import TestCA

HOST = "kiosk-01.parks"
CHECK = "kiosk-app"


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[WebhookReceiver, SmtpReceiver, TestCA]]:
    ca = TestCA(tmp_path / "ca")
    webhook = WebhookReceiver(SECRET).start()
    smtp = SmtpReceiver(ca.issue("mail", ips=("127.0.0.1",))).start()
    yield webhook, smtp, ca
    webhook.stop()
    smtp.stop()


def post(collector: CollectorProcess, path: str, body: dict[str, Any]) -> Any:
    response = requests.post(
        collector.url + path,
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {collector.admin_token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def hook_events(webhook: WebhookReceiver, kind: str) -> list[dict[str, Any]]:
    return [
        b["event"]
        for b in webhook.bodies()
        if b["type"] == "event" and b["event"]["kind"] == kind
        and b["event"]["subject"] == CHECK
    ]  # fmt: skip


def mails(smtp: SmtpReceiver, words: str) -> list[Any]:
    return [m for m in smtp.messages if words in str(m["Subject"])]


@pytest.mark.slow
def test_one_finding_from_flag_to_verified(
    tmp_path: Path,
    database_url: str,
    receivers: tuple[WebhookReceiver, SmtpReceiver, TestCA],
) -> None:
    """opened -> unit told by mail and webhook -> acknowledged with a note -> waived with an
    expiry -> the waiver expires -> told again -> fixed on the host -> resolved -> verified ->
    in the unit's report for the period (API and CLI, JSON, CSV, HTML); every step is in the
    audit log, and no message arrived twice."""
    webhook, smtp, ca = receivers
    port = free_port()
    period_start = datetime.now(UTC) - timedelta(minutes=1)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"""
[units.parks]
title = "Parks and Gardens"
emails = ["it@parks.example"]
targets = ["parks-hook"]

[verification]
reports = 2
hours = 0

[hosts."{HOST}"]
unit = "parks"
"""
    )
    notifications = tmp_path / "notifications.toml"
    notifications.write_text(
        smtp_table(tmp_path, smtp, ca) + hook_table(tmp_path, "parks-hook", webhook.url)
    )
    collector = CollectorProcess(
        tmp_path,
        database_url,
        policy=policy,
        extra_env={
            "FLEETWATCH_NOTIFICATIONS": str(notifications),
            "FLEETWATCH_NOTIFY_INTERVAL": "0.2",
            # this machine's other listeners and collection quirks may open findings too:
            # the unit gets each as its own message, never a summary
            "FLEETWATCH_NOTIFY_STORM_THRESHOLD": "1000",
        },
    ).start()
    checks = json.dumps([{"type": "tcp", "name": CHECK, "port": port, "timeout": 1}])
    agent = AgentProcess(collector, tmp_path / "agent", HOST, tmp_path / "agent.log",
                         checks=checks).start()  # fmt: skip
    listener: socket.socket | None = None
    try:
        # 1. the check fails on the host: a finding opens, and the unit is told both ways
        (opened,) = wait_until("the webhook's opened", lambda: hook_events(webhook, "opened"))
        fid = opened["finding_id"]
        assert (opened["rule"], opened["unit"], opened["host_id"]) == (
            "failing_checks",
            "parks",
            HOST,
        )
        finding = collector.api(f"/api/v1/findings/{fid}")
        assert (finding["key"], finding["state"], finding["open"]) == (CHECK, "open", True)
        (mail,) = wait_until(
            "the opened mail", lambda: mails(smtp, f"opened: failing_checks {CHECK}")
        )
        assert mail["To"] == "it@parks.example"
        assert smtp.box.tls_seen[-1]

        # 2. acknowledged with a note
        acked = post(collector, f"/api/v1/findings/{fid}/acknowledge",
                     {"note": "kiosk vendor called; fix due Friday"})  # fmt: skip
        assert acked["state"] == "acknowledged"
        assert acked["note"] == "kiosk vendor called; fix due Friday"

        # 3. waived until a few seconds from now
        expires = datetime.now(UTC) + timedelta(seconds=6)
        waiver = post(collector, "/api/v1/waivers", {
            "scope": "host", "target": HOST, "rule": "failing_checks", "subject": CHECK,
            "reason": "kiosk replaced this week", "owner": "parks IT",
            "expires_at": expires.isoformat(),
        })  # fmt: skip
        wait_until("the finding waived", lambda: collector.api(f"/api/v1/findings/{fid}")["waived"])

        # 4. the waiver expires: the unit is told again, by both ways
        (expired,) = wait_until(
            "the webhook's waiver_expired",
            lambda: [b["event"] for b in webhook.bodies() if b["type"] == "event"
                     and b["event"]["kind"] == "waiver_expired"],
            timeout=60,
        )  # fmt: skip
        assert expired["detail"]["waiver_id"] == waiver["id"]
        assert expired["unit"] == "parks"
        wait_until("the waiver_expired mail", lambda: mails(smtp, "waiver expired"))
        assert not collector.api(f"/api/v1/findings/{fid}")["waived"]

        # 5. fixed on the host: the check passes, the finding resolves, then is verified
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        wait_until(
            "the finding verified",
            lambda: collector.api(f"/api/v1/findings/{fid}")["state"] == "verified",
            timeout=90,
        )
        wait_until("the webhook's resolved", lambda: hook_events(webhook, "resolved"))
        wait_until("the resolved mail", lambda: mails(smtp, f"resolved: failing_checks {CHECK}"))
    finally:
        assert agent.stop() == 0
        if listener is not None:
            listener.close()
        collector.stop()
    collector.start()
    try:
        # 6. the unit's report for the period shows it fixed and verified, with its note
        since = period_start.isoformat()
        report = collector.api("/api/v1/reports/units/parks", since=since)
        (verified,) = [f for f in report["verified"] if f["id"] == fid]
        assert (verified["subject"], verified["state"]) == (CHECK, "verified")
        assert verified["note"] == "kiosk vendor called; fix due Friday"
        assert fid in [f["id"] for f in report["fixed"]]
        assert fid not in [f["id"] for f in report["open"]]
        assert HOST in [h["host_id"] for h in report["hosts"]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
        env.update(FLEETWATCH_API_URL=collector.url, FLEETWATCH_API_TOKEN=collector.admin_token)
        for fmt, marker in (("csv", f"{HOST}"), ("html", "<html")):
            shown = subprocess.run(
                [str(BIN / "fleetwatch"), "report", "unit", "parks", "--since", since,
                 "--format", fmt],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert marker in shown.stdout
            assert CHECK in shown.stdout

        # 7. the audit log holds every step, in order
        history = [e["kind"] for e in collector.api("/api/v1/audit", finding_id=fid)]
        for step in ("opened", "acknowledged", "waived", "unwaived", "resolved", "verified"):
            assert step in history, (step, history)
        assert history.index("opened") < history.index("acknowledged") < history.index("waived")
        assert history.index("waived") < history.index("unwaived") < history.index("resolved")
        assert history.index("resolved") < history.index("verified")
        kinds = [e["kind"] for e in collector.api("/api/v1/audit", unit="parks")]
        assert "waiver_created" in kinds
        assert "waiver_expired" in kinds
    finally:
        collector.stop()
    # no message arrived twice, and every webhook message was signed
    assert len(webhook.deliveries()) == len(set(webhook.deliveries()))
    assert all(r.signed for r in webhook.received)
    ids = [m["Message-ID"] for m in smtp.messages]
    assert len(ids) == len(set(ids))
