"""A waived finding does not count: the API, /metrics and the dashboard agree."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.collector.web.dashboard.conftest import make_client
from tests.collector.web.dashboard.fleet import ADMIN, sign_in
from tests.collector.web.dashboard.test_pages import api, figure


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(database_url, tmp_path, metrics_cache_seconds=0)


def waive_host(client: TestClient, host_id: str) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {
        "scope": "host", "target": host_id, "rule": "allowed_ports", "subject": "*",
        "reason": "decommissioned next week", "owner": "parks it", "expires_at": expires,
    }  # fmt: skip
    answer = client.post("/api/v1/waivers", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text


def metric(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
        if s.name == name
    }


def unit_cell(page: str, unit: str, name: str) -> int:
    """A count in a unit's row of the overview's unit table."""
    row = re.search(rf'<tr data-unit="{re.escape(unit)}">(.*?)</tr>', page, re.DOTALL)
    assert row is not None, unit
    cell = re.search(rf'data-count="{name}">(\d+)<', row.group(1))
    assert cell is not None, name
    return int(cell.group(1))


def counted(client: TestClient) -> dict[str, Any]:
    """What the API, /metrics and the dashboard's overview say of unit parks."""
    hosts = [h for h in api(client, "/api/v1/hosts") if h["unit"] == "parks"]
    sign_in(client, ADMIN)
    overview = client.get("/dashboard/").text
    host_list = client.get("/dashboard/hosts?unit=parks&status=noncompliant").text
    return {
        "api_noncompliant": sum(1 for h in hosts if h["status"] == "noncompliant"),
        "api_open": sum(sum(h["open_by_severity"].values()) for h in hosts),
        "metrics_noncompliant": metric(client, "fleetwatch_hosts")[
            ("status", "noncompliant"), ("unit", "parks")
        ],
        "metrics_open": sum(
            v
            for labels, v in metric(client, "fleetwatch_open_findings").items()
            if ("unit", "parks") in labels
        ),
        "page_unit_noncompliant": unit_cell(overview, "parks", "noncompliant"),
        "page_unit_open": sum(
            unit_cell(overview, "parks", s) for s in ("critical", "high", "medium", "low")
        ),
        "page_open": sum(
            figure(overview, f"open-{s}") for s in ("critical", "high", "medium", "low")
        ),
        "page_lists_web_01": 'data-host="web-01"' in host_list,
    }


def test_a_waived_finding_counts_nowhere(client: TestClient) -> None:
    """web-01's open findings, waived: the API, /metrics and the dashboard all stop counting
    them and call web-01 compliant."""
    before = counted(client)
    assert before["api_noncompliant"] == before["metrics_noncompliant"] == 1
    assert before["page_unit_noncompliant"] == 1
    assert before["api_open"] == before["metrics_open"] == before["page_unit_open"] > 0
    assert before["page_lists_web_01"]

    waive_host(client, "web-01")

    after = counted(client)
    assert after["api_noncompliant"] == after["metrics_noncompliant"] == 0
    assert after["page_unit_noncompliant"] == 0
    assert after["api_open"] == after["metrics_open"] == after["page_unit_open"] == 0
    assert not after["page_lists_web_01"]
    assert after["page_open"] == before["page_open"] - before["api_open"]
