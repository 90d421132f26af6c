"""The HTTP API, in process: enrollment, reports, reading, and every refusal's message."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.helpers import full, make_report, ports_section

ADMIN = "admin-token-for-tests"
SECRET = "enroll-secret-for-tests"
POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 600

[hosts."web-01"]
unit = "parks"

[hosts."db-01"]
unit = "water"

[hosts."never-01"]
unit = "parks"
"""


class IsoTime:
    """Equal to any ISO 8601 time: for times a test cannot know, such as when a host enrolled."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return False
        try:
            datetime.fromisoformat(other)
        except ValueError:
            return False
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "IsoTime()"


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(
            method, path, headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs
        )

    def enroll(self, host_id: str, secret: str = SECRET) -> str:
        response = self.client.post(
            "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": secret}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def report(self, token: str, body: Any, **headers: str) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/api/v1/report",
            content=data,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                **headers,
            },
        )


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = CollectorSettings(
        database_url=database_url,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        max_body_bytes=2_000_000,
    )
    with TestClient(create_app(settings)) as client:
        yield Api(client)


class TestEnroll:
    def test_enroll_gives_a_host_token(self, api: Api) -> None:
        assert api.enroll("web-01").startswith("fwh_")

    def test_wrong_secret(self, api: Api) -> None:
        response = api.client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": "nope"}
        )
        assert response.status_code == 403
        assert response.json()["detail"] == "enrollment secret not accepted"

    def test_enrolled_host_cannot_enroll_again_with_the_secret_alone(self, api: Api) -> None:
        """A leaked secret cannot take over a host: enrolling again needs an admin."""
        first = api.enroll("web-01")
        response = api.client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": SECRET}
        )
        assert response.status_code == 409
        assert "allow-reenroll" in response.json()["detail"]
        assert (
            api.admin(
                "POST", "/api/v1/hosts/web-01/allow-reenroll", json={"minutes": 5}
            ).status_code
            == 200
        )
        second = api.enroll("web-01")
        assert second != first
        # the old token stopped working; the new one works
        assert api.report(first, make_report("web-01", 1)).status_code == 401
        assert api.report(second, make_report("web-01", 1)).status_code == 200

    def test_malformed_enrollment(self, api: Api) -> None:
        response = api.client.post(
            "/api/v1/enroll", json={"host_id": "bad host!", "enroll_secret": "x"}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["host_id"]


class TestReport:
    def test_report_is_acknowledged(self, api: Api) -> None:
        token = api.enroll("web-01")
        response = api.report(token, make_report("web-01", 1))
        assert response.status_code == 200
        ack = response.json()
        assert ack["status"] == "stored"
        assert ack["sequence"] == 1
        assert set(ack["sections"]) == {
            "system",
            "packages",
            "updates",
            "ports",
            "services",
            "checks",
            "resources",
        }

    def test_gzip_body(self, api: Api) -> None:
        token = api.enroll("web-01")
        body = gzip.compress(json.dumps(make_report("web-01", 1)).encode())
        assert api.report(token, body, **{"Content-Encoding": "gzip"}).status_code == 200

    @pytest.mark.parametrize(
        ("headers", "status", "message"),
        [
            ({}, 401, "missing bearer token"),
            ({"Authorization": "Bearer fwh_unknown"}, 401, "host token not accepted"),
            ({"Authorization": "Basic abc"}, 401, "missing bearer token"),
        ],
    )
    def test_bad_tokens(self, api: Api, headers: dict[str, str], status: int, message: str) -> None:
        response = api.client.post("/api/v1/report", json=make_report("web-01", 1), headers=headers)
        assert response.status_code == status
        assert message in response.json()["detail"]

    def test_another_hosts_token(self, api: Api) -> None:
        token = api.enroll("db-01")
        response = api.report(token, make_report("web-01", 1))
        assert response.status_code == 403
        assert "can only report as itself" in response.json()["detail"]

    def test_malformed_json(self, api: Api) -> None:
        token = api.enroll("web-01")
        response = api.report(token, b'{"schema_version": 1,')
        assert response.status_code == 400
        assert response.json()["detail"].startswith("body is not valid JSON")

    def test_schema_errors_name_the_field(self, api: Api) -> None:
        token = api.enroll("web-01")
        body = make_report("web-01", 1)
        body["sections"]["ports"]["data"]["listeners"][0]["port"] = 70000
        response = api.report(token, body)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["sections", "ports", "data", "listeners", 0, "port"]
        assert "input" not in error  # the offending input is not echoed back

    def test_unknown_schema_version(self, api: Api) -> None:
        token = api.enroll("web-01")
        body = make_report("web-01", 1)
        body["schema_version"] = 99
        response = api.report(token, body)
        assert response.status_code == 400
        assert (
            response.json()["detail"]
            == "unsupported schema_version 99; this collector understands 1"
        )

    def test_oversized_body(self, api: Api) -> None:
        token = api.enroll("web-01")
        response = api.report(token, b"x" * 2_100_000)
        assert response.status_code == 413
        assert "over the limit of 2000000 bytes" in response.json()["detail"]

    def test_gzip_bomb(self, api: Api) -> None:
        """A small compressed body that inflates past the limit is refused."""
        token = api.enroll("web-01")
        bomb = gzip.compress(b"{" + b" " * 50_000_000)
        response = api.report(token, bomb, **{"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert "decompressed" in response.json()["detail"]

    def test_unknown_encoding(self, api: Api) -> None:
        token = api.enroll("web-01")
        response = api.report(token, b"{}", **{"Content-Encoding": "br"})
        assert response.status_code == 415

    def test_refused_report_stores_nothing(self, api: Api) -> None:
        """After a refused report the host still has never reported."""
        token = api.enroll("web-01")
        body = make_report("web-01", 1)
        body["sections"]["packages"]["data"]["packages"][5][1] = ""
        assert api.report(token, body).status_code == 422
        host = api.admin("GET", "/api/v1/hosts/web-01").json()
        assert host["status"] == "never_reported"
        assert api.admin("GET", "/api/v1/hosts/web-01/reports").json() == []


class TestRead:
    def _fleet(self, api: Api) -> None:
        web = api.enroll("web-01")
        db = api.enroll("db-01")
        sections = make_report("web-01", 1)["sections"]
        sections["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8080))
        assert api.report(web, make_report("web-01", 1, sections)).status_code == 200
        sections["ports"] = ports_section(("tcp", "0.0.0.0", 22))
        assert api.report(db, make_report("db-01", 1, sections)).status_code == 200

    def test_needs_a_token(self, api: Api) -> None:
        assert api.client.get("/api/v1/hosts").status_code == 401
        bad = api.client.get("/api/v1/hosts", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401

    def test_hosts_and_their_status(self, api: Api) -> None:
        self._fleet(api)
        hosts = {h["host_id"]: h for h in api.admin("GET", "/api/v1/hosts").json()}
        assert hosts["web-01"]["status"] == "noncompliant"
        assert hosts["web-01"]["open_findings"] == 1
        assert hosts["web-01"]["open_by_severity"] == {"high": 1}
        assert hosts["db-01"]["status"] == "compliant"
        assert hosts["never-01"]["status"] == "never_reported"
        assert hosts["web-01"]["unit"] == "parks"
        only = api.admin("GET", "/api/v1/hosts", params={"status": "noncompliant"}).json()
        assert [h["host_id"] for h in only] == ["web-01"]
        parks = api.admin("GET", "/api/v1/hosts", params={"unit": "parks"}).json()
        assert sorted(h["host_id"] for h in parks) == ["never-01", "web-01"]

    def test_stale_host(self, api: Api) -> None:
        token = api.enroll("web-01")
        old = datetime.now(UTC) - timedelta(hours=2)
        assert api.report(token, make_report("web-01", 1, collected_at=old)).status_code == 200
        host = api.admin("GET", "/api/v1/hosts/web-01").json()
        assert host["status"] == "stale"

    def test_host_detail_has_every_section_and_findings(self, api: Api) -> None:
        self._fleet(api)
        host = api.admin("GET", "/api/v1/hosts/web-01").json()
        assert host["sections"]["system"]["data"]["os"]["id"] == "debian"
        assert len(host["sections"]["packages"]["data"]["packages"]) > 100
        assert [f["key"] for f in host["findings"]] == ["tcp/8080"]
        assert api.admin("GET", "/api/v1/hosts/nope-01").status_code == 404

    def test_host_detail_json(self, api: Api) -> None:
        """A host's detail as the API has always answered it: a section held, one held but
        failing since, one sent as a hash the collector does not hold."""
        token = api.enroll("web-01")
        collected = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        checks = full("checks", {"results": []})
        first = {"checks": checks, "ports": ports_section(("tcp", "0.0.0.0", 22))}
        second = {
            "checks": {"hash": checks["hash"]},
            "ports": {"error": "psutil: permission denied"},
            "packages": {"hash": "f" * 64},
        }
        for sequence, sections in enumerate([first, second], 1):
            body = make_report("web-01", sequence, sections, collected_at=collected)
            assert api.report(token, body).status_code == 200
        at = collected.isoformat().replace("+00:00", "Z")
        assert api.admin("GET", "/api/v1/hosts/web-01").json() == {
            "host_id": "web-01",
            "unit": "parks",
            "groups": [],
            "status": "noncompliant",
            "last_report_at": at,
            "agent_version": "0.1.0",
            "open_findings": 1,
            "open_by_severity": {"low": 1},
            "in_policy": True,
            "enrolled": True,
            "enrolled_at": IsoTime(),
            "last_sequence": 2,
            "dropped_reports": 0,
            "spool_error": None,
            "sections": {
                "checks": {
                    "hash": "5021e624e752b001ce3e3846e8f158ed4aeb93a4c9a72fdb35a0c5b14a0eea84",
                    "error": None,
                    "missing": None,
                    "data": {"results": []},
                },
                "ports": {
                    "hash": "11414cf218f5edceaa958d15579854f5ced9c81244f2f2b96220b99bc7c5cfcc",
                    "error": "psutil: permission denied",
                    "missing": None,
                    "data": {
                        "listeners": [
                            {
                                "protocol": "tcp",
                                "address": "0.0.0.0",
                                "port": 22,
                                "pid": 100,
                                "process": "demo",
                                "user": "root",
                            }
                        ]
                    },
                },
                "packages": {
                    "hash": None,
                    "error": None,
                    "missing": "sent as a hash the collector does not hold",
                    "data": None,
                },
            },
            "findings": [
                {
                    "id": 1,
                    "host_id": "web-01",
                    "rule": "collection_errors",
                    "key": "ports",
                    "severity": "low",
                    "detail": "the agent could not collect ports: psutil: permission denied",
                    "first_seen": at,
                    "last_seen": at,
                    "resolved_at": None,
                    "open": True,
                    "state": "open",
                    "waived": False,
                    "waiver_id": None,
                    "due_at": None,
                    "overdue": False,
                    "acknowledged_by": None,
                    "acknowledged_at": None,
                    "note": None,
                    "verified_at": None,
                    "reopened": 0,
                }
            ],
        }

    def test_findings_filters(self, api: Api) -> None:
        self._fleet(api)
        assert len(api.admin("GET", "/api/v1/findings", params={"host_id": "web-01"}).json()) == 1
        assert api.admin("GET", "/api/v1/findings", params={"host_id": "db-01"}).json() == []
        assert (
            len(api.admin("GET", "/api/v1/findings", params={"rule": "allowed_ports"}).json()) == 1
        )
        assert api.admin("GET", "/api/v1/findings", params={"open": "false"}).json() == []
        assert len(api.admin("GET", "/api/v1/findings", params={"unit": "parks"}).json()) == 1
        assert api.admin("GET", "/api/v1/findings", params={"unit": "water"}).json() == []

    def test_reports_of_a_host(self, api: Api) -> None:
        self._fleet(api)
        (row,) = api.admin("GET", "/api/v1/hosts/web-01/reports").json()
        assert row["sequence"] == 1
        assert row["dropped"] == 0

    def test_openapi_describes_the_report_body(self, api: Api) -> None:
        spec = api.client.get("/openapi.json").json()
        body = spec["paths"]["/api/v1/report"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Report"
        }
        assert "Listener" in spec["components"]["schemas"]

    def test_healthz(self, api: Api) -> None:
        assert api.client.get("/healthz").json()["status"] == "ok"
