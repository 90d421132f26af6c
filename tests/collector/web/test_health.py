"""Liveness (/healthz) and readiness (/readyz): a load balancer can tell a collector that is up
from one that can store reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.collector.ingest.test_readiness import read_only, writable
from tests.helpers import make_report

SECRET = "enroll-secret-for-health-tests"


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = CollectorSettings(database_url=database_url, enroll_secret=SECRET, data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        yield client


class TestReadyz:
    def test_ready_needs_no_token(self, client: TestClient) -> None:
        """Anyone may ask, as for /healthz: a load balancer has no token."""
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}

    def test_not_ready_while_reports_cannot_be_stored(self, client: TestClient) -> None:
        """A read-only database: reports get 503, /readyz says 503 and why while /healthz
        stays 200; once a report is stored again, ready again."""
        svc: CollectorService = client.app.state.service  # type: ignore[attr-defined]
        token = client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": SECRET}
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        on_connect = read_only(svc)
        try:
            refused = client.post("/api/v1/report", json=make_report("web-01", 1), headers=auth)
            assert refused.status_code == 503
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["retry-after"] == "5"
            body = ready.json()
            assert body["status"] == "not ready"
            assert body["reason"].startswith("writes fail: ")
            assert "read" in body["reason"]
            assert body["since"]
            assert client.get("/healthz").status_code == 200
        finally:
            writable(svc, on_connect)
        stored = client.post("/api/v1/report", json=make_report("web-01", 1), headers=auth)
        assert stored.status_code == 200
        assert client.get("/readyz").json() == {"status": "ready"}
