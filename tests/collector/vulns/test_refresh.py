"""Fetching vulnerability data from configured URLs (a real HTTP server on loopback): once
per refresh period, by the housekeeper of the fleet, all or nothing."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from tests.collector.vulns.samples import KEV, TRACKER

FILES = {"/tracker/data/json": TRACKER.read_bytes(), "/kev.json": KEV.read_bytes()}


class Handler(http.server.BaseHTTPRequestHandler):
    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        body = FILES.get(self.path)
        Handler.served.append(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.served = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def make(tmp_path: Path, urls: list[str]) -> CollectorService:
    svc = CollectorService(
        CollectorSettings(
            database_url=f"sqlite:///{tmp_path / 'fleetwatch.db'}",
            data_dir=tmp_path,
            vulnerability_urls=urls,
            policy_check_interval=3600,  # rounds are run by the test, not the thread
        )
    )
    svc.start()
    return svc


def test_the_housekeeper_fetches_once_per_period(server: str, tmp_path: Path) -> None:
    """Both URLs are fetched and imported by the first round, and not again within the period."""
    svc = make(tmp_path, [f"{server}/tracker/data/json", f"{server}/kev.json"])
    try:
        svc.housekeeper.round()
        assert sorted(i.name for i in svc.vulnerabilities.status()) == ["debian-tracker", "kev"]
        assert svc.vulnerabilities.index.exploited["CVE-2023-4911"] == "2023-11-21"
        svc.housekeeper.round()
        assert Handler.served == ["/tracker/data/json", "/kev.json"]
    finally:
        svc.stop()


def test_one_failed_url_imports_nothing(server: str, tmp_path: Path) -> None:
    """A URL that fails leaves the data as it was, even what the other URLs gave."""
    svc = make(tmp_path, [f"{server}/tracker/data/json", f"{server}/missing.json"])
    try:
        assert svc.housekeeper.fetch_vulnerabilities() is False
        assert svc.vulnerabilities.status() == []
    finally:
        svc.stop()


def test_off_by_default(tmp_path: Path) -> None:
    """Without URLs nothing is ever fetched."""
    svc = make(tmp_path, [])
    try:
        assert svc.housekeeper.vulnerability_fetch_due() is False
    finally:
        svc.stop()
