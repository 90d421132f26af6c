"""A small fleet for the dashboard's tests: two units, a hostile host, a collector to see it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tests.helpers import full, make_report, ports_section, section_data

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

ADMIN = "admin-token-for-dashboard-tests"
SECRET = "fleet-enroll-secret"
HOSTILE = '<script>alert("owned")</script><b>bold</b>'
POLICY = """
[defaults]
allowed_ports = ["tcp/22"]

[groups.web]
[groups.db]

[hosts."web-01"]
unit = "parks"
groups = ["web"]

[hosts."web-02"]
unit = "parks"
groups = ["web"]

[hosts."db-01"]
unit = "water"
groups = ["db"]

[hosts."evil-01"]
unit = "water"

[hosts."quiet-01"]
unit = "parks"

[hosts."old-01"]
unit = "water"
"""


def report_as(
    client: TestClient,
    host_id: str,
    sequence: int = 1,
    collected_at: datetime | None = None,
    **sections: Any,
) -> None:
    """Enroll ``host_id`` (first time) and store one report from it."""
    enrolled = client.post("/api/v1/enroll", json={"host_id": host_id, "enroll_secret": SECRET})
    token = enrolled.json()["token"]
    body = make_report(host_id, sequence, collected_at=collected_at)
    body["sections"].update(sections)
    answer = client.post(
        "/api/v1/report",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text


def seed(client: TestClient) -> None:
    """web-01 and db-01 report the captured Debian 12 host (ports beyond 22: findings);
    web-02 reports only ssh; evil-01 reports markup as its hostname and process; old-01
    reported three days ago (stale); quiet-01 never reports."""
    report_as(client, "web-01")
    report_as(client, "db-01")
    report_as(client, "web-02", ports=ports_section(("tcp", "0.0.0.0", 22)))
    hostile_system = full("system", section_data("system", hostname=HOSTILE))
    hostile_ports = full(
        "ports",
        {
            "listeners": [
                {
                    "protocol": "tcp",
                    "address": "0.0.0.0",
                    "port": 4444,
                    "pid": 66,
                    "process": HOSTILE,
                    "user": HOSTILE,
                }
            ]
        },
    )
    report_as(client, "evil-01", system=hostile_system, ports=hostile_ports)
    report_as(client, "old-01", collected_at=datetime.now(UTC) - timedelta(days=3))
    client.app.state.service.fleet_recorder.refresh()  # type: ignore[attr-defined]


def api_token(client: TestClient, kind: str, unit: str | None = None) -> str:
    made = client.post(
        "/api/v1/tokens",
        json={"name": f"{kind} {unit or 'fleet'}", "kind": kind, "unit": unit},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert made.status_code == 200, made.text
    return str(made.json()["token"])


def sign_in(client: TestClient, token: str) -> Any:
    """Sign in through the form, as a browser does; the answer to the form's POST."""
    form = client.get("/dashboard/login")
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text)
    assert form_token is not None
    return client.post(
        "/dashboard/login",
        data={"form_token": form_token.group(1), "token": token},
        follow_redirects=False,
    )


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)
