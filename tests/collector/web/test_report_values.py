"""Extreme values in otherwise valid reports: every timestamp, number and count an agent may
send gets an answer, never a 5xx, on SQLite and PostgreSQL; what is stored passes its own
schema again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from fleetwatch.schema import SECTION_TYPES, Report
from tests.helpers import make_report, section_data

ADMIN = "admin-token-for-value-tests"
SECRET = "value-enroll-secret"
HOST = "values-01"
BIG = "1e400"  # JSON that parses to infinity; Python's json cannot write it, so it is spliced

LARGEST_OFFSET = timedelta(hours=23, minutes=59)
offsets = st.sampled_from([-LARGEST_OFFSET, LARGEST_OFFSET]) | st.timedeltas(
    min_value=-LARGEST_OFFSET, max_value=LARGEST_OFFSET
)
moments = st.sampled_from(
    [
        datetime.min,  # noqa: DTZ901  (naive: the offset is drawn apart)
        datetime.max,  # noqa: DTZ901
        datetime(1970, 1, 1),  # noqa: DTZ001
        datetime(2999, 12, 31, 23, 59, 59),  # noqa: DTZ001
    ]
) | st.datetimes(
    min_value=datetime.min,  # noqa: DTZ901
    max_value=datetime.max,  # noqa: DTZ901
)
timestamps = st.builds(
    lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(), moments, offsets
)
numbers = st.sampled_from(
    [float("inf"), float("-inf"), float("nan"), BIG, 1e308, -0.0, 0, 2**62, 2**63, 2**64]
) | st.floats(allow_nan=True, allow_infinity=True)
VALID: dict[str, Any] = {
    "collected": None,  # now, set per example
    "boot": "2026-01-01T00:00:00+00:00",
    "since": None,
    "refreshed": None,
    "load": [0.5, 0.5, 0.5],
    "percent": 10.0,
    "latency": 1.0,
    "cpus": 2,
    "dropped": 0,
}
EXTREMES: dict[str, st.SearchStrategy[Any]] = {
    "collected": timestamps,
    "boot": timestamps,
    "since": timestamps,
    "refreshed": timestamps,
    "load": st.tuples(numbers, st.just(0.5), st.just(0.5)),
    "percent": numbers,
    "latency": numbers,
    "cpus": numbers,
    "dropped": numbers,
}
# one field at a time takes an extreme value; the rest of the report stays valid, so that
# every example reaches as far into the collector as that one value lets it
one_extreme = st.sampled_from(sorted(EXTREMES)).flatmap(
    lambda field: st.tuples(st.just(field), EXTREMES[field])
)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        CollectorSettings(
            database_url=database_url,
            admin_token=ADMIN,
            enroll_secret=SECRET,
            data_dir=tmp_path,
            host_rate=1e6,
            host_burst=10**6,
        )
    )
    with TestClient(app) as test_client:
        yield test_client


def _with_hash(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"hash": hashlib.sha256(json.dumps(data).encode()).hexdigest(), "data": data}


def _body(sequence: int, values: dict[str, Any]) -> str:
    """A full report with the drawn values in place, as JSON text."""
    system = section_data("system", boot_time=values["boot"], reboot_required_since=values["since"])
    updates = section_data("updates", index_refreshed_at=values["refreshed"])
    resources = section_data("resources")
    resources["load_average"] = values["load"]
    resources["memory"]["percent"] = values["percent"]
    resources["cpu_count"] = values["cpus"]
    checks = {
        "results": [
            {
                "name": "web",
                "kind": "tcp",
                "target": "x:1",
                "ok": True,
                "latency_ms": values["latency"],
            }
        ]
    }
    body = make_report(HOST, sequence, {})
    body["collected_at"] = values["collected"]
    body["delivery"] = {"dropped_reports": values["dropped"]}
    body["sections"] = {
        "system": _with_hash("system", system),
        "updates": _with_hash("updates", updates),
        "resources": _with_hash("resources", resources),
        "checks": _with_hash("checks", checks),
    }
    return json.dumps(body).replace(f'"{BIG}"', BIG)


def test_no_valid_schema_report_gets_a_5xx(client: TestClient) -> None:
    """Reports with extreme timestamps (any offset), infinite, NaN and huge numbers and counts
    are stored or refused with 4xx; what is stored validates against its schema again."""
    token = client.post("/api/v1/enroll", json={"host_id": HOST, "enroll_secret": SECRET}).json()[
        "token"
    ]
    sequence = iter(range(1, 10**6))

    @given(extreme=one_extreme)
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(extreme: tuple[str, Any]) -> None:
        values = {**VALID, "collected": datetime.now(UTC).isoformat()}
        values[extreme[0]] = extreme[1]
        response = client.post(
            "/api/v1/report",
            content=_body(next(sequence), values),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status_code < 500, response.text[:300]
        assert response.status_code in {200, 422}, response.text[:300]
        if response.status_code == 200:
            host = client.get(f"/api/v1/hosts/{HOST}", headers={"Authorization": f"Bearer {ADMIN}"})
            assert host.status_code == 200
            for name, section in host.json()["sections"].items():
                if section["data"] is not None:
                    SECTION_TYPES[name].model_validate(section["data"])

    check()


class TestRefusedValues:
    @pytest.mark.parametrize(
        "collected_at",
        ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", "1969-12-31T23:59:59Z"],
    )
    def test_a_timestamp_out_of_range_is_refused_with_422(
        self, client: TestClient, collected_at: str
    ) -> None:
        """A timestamp the databases cannot hold is a 422 naming the field, not a 500."""
        token = client.post(
            "/api/v1/enroll", json={"host_id": HOST, "enroll_secret": SECRET}
        ).json()["token"]
        body = make_report(HOST, 1)
        body["collected_at"] = collected_at
        response = client.post(
            "/api/v1/report", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["collected_at"]
        assert "out of range" in response.json()["detail"][0]["msg"]

    @pytest.mark.parametrize("load", ["Infinity", "-Infinity", "NaN", BIG])
    def test_a_non_finite_number_is_refused_with_422(self, client: TestClient, load: str) -> None:
        """Infinity, NaN and 1e400 are refused, not stored as null."""
        token = client.post(
            "/api/v1/enroll", json={"host_id": HOST, "enroll_secret": SECRET}
        ).json()["token"]
        text = _body(1, {**VALID, "collected": datetime.now(UTC).isoformat()}).replace(
            "[0.5, 0.5, 0.5]", f"[{load}, 0.5, 0.5]"
        )
        response = client.post(
            "/api/v1/report",
            content=text,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:4] == [
            "sections",
            "resources",
            "data",
            "load_average",
        ]


def test_reports_of_the_agent_stay_valid() -> None:
    """The bounds refuse nothing a real agent sends: the captured report still parses."""
    Report.model_validate(make_report(HOST, 1))
