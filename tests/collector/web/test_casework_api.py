"""The response to findings through the real collector over HTTP and the real `fleetwatch`
command: units, acknowledging within a unit, due dates going overdue, waivers expiring, the
fix verified, and the audit log holding every step (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import BIN, CollectorProcess, make_report, ports_section, wait_until

POLICY = """
[defaults]
allowed_ports = ["tcp/22"]

[hosts."web-01"]
unit = "parks"

[hosts."web-02"]
unit = "water"

[units.parks]
title = "Parks and Gardens"
emails = ["it@parks.example.org"]
targets = ["parks-hook"]
digest = "daily"

[due_days]
high = 7

[verification]
reports = 2
"""

OPEN = {"ports": ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8081))}
FIXED = {"ports": ports_section(("tcp", "0.0.0.0", 22))}


class Fleet:
    """A running collector, hosts that report to it, and callers with their tokens."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.host_tokens: dict[str, str] = {}
        self.sequences: dict[str, int] = {}

    def call(self, token: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method,
            self.collector.url + path,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            **kwargs,
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(self.collector.admin_token, method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def token(self, name: str, kind: str, unit: str | None) -> str:
        made = self.admin("POST", "/api/v1/tokens", json={"name": name, "kind": kind, "unit": unit})
        return str(made["token"])

    def report(self, host_id: str, sections: dict[str, Any]) -> None:
        if host_id not in self.host_tokens:
            enrolled = requests.post(
                self.collector.url + "/api/v1/enroll",
                json={"host_id": host_id, "enroll_secret": self.collector.enroll_secret},
                timeout=10,
            )
            self.host_tokens[host_id] = enrolled.json()["token"]
        self.sequences[host_id] = self.sequences.get(host_id, 0) + 1
        body = make_report(host_id, self.sequences[host_id], sections)
        response = self.call(self.host_tokens[host_id], "POST", "/api/v1/report", json=body)
        assert response.status_code == 200, response.text

    def cli(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
        env.update({"FLEETWATCH_API_URL": self.collector.url, "FLEETWATCH_API_TOKEN": token})
        return subprocess.run(
            [str(BIN / "fleetwatch"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def cli_json(self, token: str, *args: str) -> Any:
        done = self.cli(token, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def kinds(self, finding_id: int) -> list[str]:
        return [
            e["kind"] for e in self.admin("GET", "/api/v1/audit", params={"finding_id": finding_id})
        ]


@pytest.fixture
def fleet(tmp_path: Path, database_url: str) -> Iterator[Fleet]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    collector = CollectorProcess(tmp_path, database_url, policy).start()
    try:
        yield Fleet(collector)
    finally:
        collector.stop()


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


class TestCaseOverHttp:
    def test_one_finding_from_opened_to_verified_with_every_step_audited(
        self, fleet: Fleet
    ) -> None:
        """opened → acknowledged by the unit → overdue → waived → waiver expiring and expired
        → overdue again → resolved → verified; the audit log holds each step with its actor."""
        admin = fleet.collector.admin_token
        parks = fleet.token("parks on call", "respond", "parks")
        fleet.report("web-01", OPEN)
        fleet.report("web-02", FIXED)
        (finding,) = fleet.cli_json(parks, "findings", "--open")
        assert (finding["host_id"], finding["key"], finding["state"]) == (
            "web-01",
            "tcp/8081",
            "open",
        )
        assert finding["due_at"] is not None  # [due_days] high = 7

        done = fleet.cli(parks, "ack", str(finding["id"]), "--note", "closing it", "--due", soon(1))
        assert done.returncode == 0, done.stderr
        assert "acknowledged" in done.stdout
        wait_until("overdue", lambda: "overdue" in fleet.kinds(finding["id"]), timeout=30)
        overdue = fleet.cli_json(admin, "findings", "--overdue")
        assert [f["id"] for f in overdue] == [finding["id"]]

        done = fleet.cli(
            admin, "waive", "--host", "web-01", "--rule", "allowed_ports", "--subject", "tcp/80*",
            "--reason", "vendor appliance", "--owner", "parks IT", "--expires", soon(10),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (waived,) = fleet.cli_json(parks, "findings", "--waived")
        assert waived["state"] == "acknowledged"
        assert not waived["overdue"]
        (host,) = [h for h in fleet.admin("GET", "/api/v1/hosts") if h["host_id"] == "web-01"]
        assert (host["status"], host["open_findings"]) == ("compliant", 0)

        wait_until(
            "waiver expired",
            lambda: fleet.kinds(finding["id"]).count("overdue") == 2,
            timeout=30,
        )
        fleet.report("web-01", FIXED)
        fleet.report("web-01", FIXED)
        shown = fleet.cli_json(parks, "finding", str(finding["id"]))
        assert shown["finding"]["state"] == "verified"
        assert [(e["kind"], e["actor"]) for e in shown["history"]] == [
            ("opened", "collector"),
            ("acknowledged", "parks on call"),
            ("due_changed", "parks on call"),
            ("overdue", "collector"),
            ("waived", "bootstrap admin"),
            ("unwaived", "collector"),
            ("overdue", "collector"),
            ("resolved", "collector"),
            ("verified", "collector"),
        ]
        waiver_events = fleet.cli_json(admin, "audit", "--unit", "parks")
        assert [e["kind"] for e in waiver_events if e["kind"].startswith("waiver_")] == [
            "waiver_created",
            "waiver_expiring",
            "waiver_expired",
        ]

    def test_a_unit_acts_only_on_its_own_findings(self, fleet: Fleet) -> None:
        """Another unit's respond token gets 404; a read token 403; a respond token cannot
        waive; an admin can do both."""
        fleet.report("web-01", OPEN)
        (finding,) = fleet.admin("GET", "/api/v1/findings", params={"open": "true"})
        path = f"/api/v1/findings/{finding['id']}/acknowledge"
        water = fleet.token("water on call", "respond", "water")
        reader = fleet.token("parks reader", "read", "parks")
        parks = fleet.token("parks on call", "respond", "parks")
        assert fleet.call(water, "POST", path, json={"note": "not ours"}).status_code == 404
        refused = fleet.call(reader, "POST", path, json={"note": "reading only"})
        assert (refused.status_code, refused.json()["detail"]) == (
            403,
            "this needs an admin token or a respond token of the finding's unit",
        )
        waiver = {
            "scope": "unit", "target": "parks", "rule": "allowed_ports", "reason": "r",
            "owner": "o", "expires_at": soon(3600),
        }  # fmt: skip
        assert fleet.call(parks, "POST", "/api/v1/waivers", json=waiver).status_code == 403
        assert (
            fleet.call(water, "GET", f"/api/v1/findings/{finding['id']}/history").status_code == 404
        )
        assert fleet.admin("POST", path, json={"note": "office looked"})["state"] == "acknowledged"
        assert [u["name"] for u in fleet.cli_json(reader, "units")] == ["parks"]

    def test_units_show_contacts_hosts_and_counts(self, fleet: Fleet) -> None:
        """`fleetwatch units`: the policy's units with their contacts, hosts and findings."""
        fleet.report("web-01", OPEN)
        units = {u["name"]: u for u in fleet.cli_json(fleet.collector.admin_token, "units")}
        assert units["parks"] | {"open_findings": 1} == {
            "name": "parks",
            "title": "Parks and Gardens",
            "emails": ["it@parks.example.org"],
            "targets": ["parks-hook"],
            "digest": "daily",
            "declared": True,
            "hosts": ["web-01"],
            "open_findings": 1,
            "overdue_findings": 0,
            "waived_findings": 0,
        }
        assert (units["water"]["declared"], units["water"]["hosts"]) == (False, ["web-02"])

    def test_bad_input_is_refused_with_what_was_wrong(self, fleet: Fleet) -> None:
        """A waiver without expiry, for an unknown rule or in the past; a respond token
        without a unit; the audit log cannot be written through the API."""
        admin = fleet.collector.admin_token
        base = {
            "scope": "host",
            "target": "web-01",
            "rule": "allowed_ports",
            "reason": "r",
            "owner": "o",
        }
        missing = fleet.call(admin, "POST", "/api/v1/waivers", json=base)
        assert missing.status_code == 422
        assert "expires_at" in missing.text
        unknown = fleet.call(
            admin, "POST", "/api/v1/waivers", json=base | {"rule": "nope", "expires_at": soon(60)}
        )
        assert (unknown.status_code, unknown.json()["detail"].split(";")[0]) == (
            422,
            "no rule 'nope'",
        )
        past = fleet.call(admin, "POST", "/api/v1/waivers", json=base | {"expires_at": soon(-60)})
        assert (past.status_code, past.json()["detail"]) == (
            422,
            "a waiver must expire in the future",
        )
        no_unit = fleet.call(admin, "POST", "/api/v1/tokens", json={"name": "x", "kind": "respond"})
        assert no_unit.status_code == 422
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert fleet.call(admin, method, "/api/v1/audit").status_code == 405
        done = fleet.cli(admin, "ack", "999", "--note", "x")
        assert (done.returncode, done.stderr.strip()) == (1, "fleetwatch: HTTP 404: no finding 999")


class TestReportsOverHttp:
    def test_a_unit_report_as_csv_and_html_escapes_what_hosts_reported(
        self, fleet: Fleet, tmp_path: Path
    ) -> None:
        """`fleetwatch report unit parks`: CSV with a row per finding, HTML with the agent's
        text escaped (no markup of its own reaches the page)."""
        hostile = "<script>alert(1)</script>"
        fleet.report("web-01", OPEN | {"services": {"error": hostile}})
        parks = fleet.token("parks reader", "read", "parks")
        done = fleet.cli(parks, "report", "unit", "parks", "--format", "csv")
        assert done.returncode == 0, done.stderr
        rows = list(csv.reader(io.StringIO(done.stdout)))
        assert rows[0][:4] == ["section", "id", "host_id", "rule"]
        open_rows = {(r[3], r[4]) for r in rows if r and r[0] == "open"}
        assert ("allowed_ports", "tcp/8081") in open_rows
        assert ("collection_errors", "services") in open_rows
        page = tmp_path / "parks.html"
        done = fleet.cli(parks, "report", "unit", "parks", "--format", "html", "-o", str(page))
        assert done.returncode == 0, done.stderr
        html = page.read_text()
        assert "Parks and Gardens" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script" not in html
        refused = fleet.cli(parks, "report", "unit", "water", "--format", "csv")
        assert (refused.returncode, refused.stderr.strip()) == (
            1,
            "fleetwatch: HTTP 404: no unit 'water'",
        )

    def test_the_fleet_summary_is_for_fleet_readers_only(self, fleet: Fleet) -> None:
        """Admins get every unit ranked; a unit's token is refused."""
        fleet.report("web-01", OPEN)
        done = fleet.cli(fleet.collector.admin_token, "report", "fleet", "--format", "json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert [u["unit"] for u in summary["units"]] == ["parks", "water"]
        assert summary["units"][0]["open"] == 1
        parks = fleet.token("parks reader", "read", "parks")
        refused = fleet.call(parks, "GET", "/api/v1/reports/fleet")
        assert refused.status_code == 403
