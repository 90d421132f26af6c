"""The vulnerability API and command line against the real collector over real HTTP, on
SQLite and on PostgreSQL: imports by `fleetwatch vulns import`, reports by HTTP, readers
scoped to their unit."""

from __future__ import annotations

import base64
import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.collector.vulns.samples import KEV, TRACKER
from tests.collector.vulns.test_service import OLD, packages
from tests.helpers import (
    BIN,
    CollectorProcess,
    clean_environment,
    full,
    make_report,
    section_data,
    wait_until,
)

POLICY = """
[defaults]
max_vulnerability_severity = "low"

[hosts."web-01"]
unit = "parks"

[hosts."db-01"]
unit = "water"
"""


class Fleet:
    def __init__(self, collector: CollectorProcess, database_url: str) -> None:
        self.collector = collector
        self.database_url = database_url

    def fleetwatch(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "FLEETWATCH_API_URL": self.collector.url,
            "FLEETWATCH_API_TOKEN": token or self.collector.admin_token,
            "FLEETWATCH_DATABASE_URL": self.database_url,
            "PATH": "/usr/bin:/bin",
        }
        return subprocess.run(
            [str(BIN / "fleetwatch"), *args], env=env, capture_output=True, text=True, check=False
        )

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        return requests.get(
            self.collector.url + path,
            params=params,
            headers={"Authorization": f"Bearer {token or self.collector.admin_token}"},
            timeout=10,
        )

    def all_pages(self, path: str, **params: Any) -> list[Any]:
        """Every page of a list (a CVE's: the ``hosts`` of each), following X-Next-Cursor."""
        pages = []
        while True:
            response = self.get(path, **params)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body["hosts"] if isinstance(body, dict) else body)
            if "X-Next-Cursor" not in response.headers:
                return pages
            params = {**params, "cursor": response.headers["X-Next-Cursor"]}

    def report(self, host_id: str, **versions: str) -> None:
        url = self.collector.url
        enrolled = requests.post(
            url + "/api/v1/enroll",
            json={"host_id": host_id, "enroll_secret": self.collector.enroll_secret},
            timeout=10,
        )
        assert enrolled.status_code == 200, enrolled.text
        sections = {
            "system": full("system", section_data("system")),
            "packages": full("packages", packages(**versions)),
            "updates": full("updates", section_data("updates", updates=[])),
        }
        sent = requests.post(
            url + "/api/v1/report",
            json=make_report(host_id, 1, sections),
            headers={"Authorization": f"Bearer {enrolled.json()['token']}"},
            timeout=10,
        )
        assert sent.status_code == 200, sent.text


@pytest.fixture(scope="module")
def fleet(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One collector with the data imported and two hosts reported, for the whole module:
    every test here only reads (a token of its own, or an import that must change nothing)."""
    tmp_path = tmp_path_factory.mktemp("vulns-api")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    with clean_environment():
        collector = CollectorProcess(tmp_path, module_database_url, policy).start()
    made = Fleet(collector, module_database_url)
    try:
        for path in (TRACKER, KEV):
            imported = made.fleetwatch("vulns", "import", str(path))
            assert imported.returncode == 0, imported.stderr
        wait_until(
            "the collector loads the data",
            lambda: made.get("/api/v1/vulnerability-data").json()["loaded_entries"] > 0,
        )
        made.report("web-01", **OLD)
        made.report("db-01", openssl=OLD["openssl"])
        yield made
    finally:
        collector.stop()


def test_listing_filters_and_pages(fleet: Fleet) -> None:
    """Every filter of the listing narrows it as named; pages follow one stable order."""
    every = fleet.get("/api/v1/vulnerabilities").json()
    assert {(r["host_id"], r["source"], r["vuln"]) for r in every} == {
        ("db-01", "curl", "CVE-2025-0725"),
        ("db-01", "openssl", "CVE-2024-0727"),
        ("db-01", "tar", "CVE-2005-2541"),
        ("web-01", "curl", "CVE-2025-0725"),
        ("web-01", "glibc", "CVE-2023-4911"),
        ("web-01", "openssl", "CVE-2024-0727"),
        ("web-01", "tar", "CVE-2005-2541"),
    }
    glibc = next(r for r in every if r["source"] == "glibc")
    assert glibc["exploited"] is True
    assert glibc["fixed_version"] == "2.36-9+deb12u3"
    assert glibc["installed_version"] == "2.36-9+deb12u1"
    assert glibc["unit"] == "parks"
    assert "libc6" in glibc["binaries"]
    by = lambda **params: {  # noqa: E731
        (r["host_id"], r["vuln"]) for r in fleet.get("/api/v1/vulnerabilities", **params).json()
    }
    assert by(host_id="db-01") == {r for r in by() if r[0] == "db-01"}
    assert by(unit="parks") == {r for r in by() if r[0] == "web-01"}
    assert by(cve="CVE-2024-0727") == {("db-01", "CVE-2024-0727"), ("web-01", "CVE-2024-0727")}
    assert by(severity="low") == {(h, "CVE-2025-0725") for h in ("db-01", "web-01")} | {
        (h, "CVE-2005-2541") for h in ("db-01", "web-01")
    }
    assert by(fixable="true") == set()
    assert fleet.get("/api/v1/vulnerabilities", severity="bad").status_code == 422


def test_pages_hold_every_row_once_in_key_order(fleet: Fleet) -> None:
    """Pages of 3 give every row once, in order of host, CVE and source package; a filter
    (a CVE, a severity, a unit) holds on every page, the CVE's own list pages the same."""
    every = fleet.get("/api/v1/vulnerabilities").json()
    pages = fleet.all_pages("/api/v1/vulnerabilities", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    keys = [(r["host_id"], r["vuln"], r["source"]) for p in pages for r in p]
    assert keys == sorted(set(keys))
    assert [r for p in pages for r in p] == every
    for params in ({"severity": "low"}, {"cve": "CVE-2024-0727"}, {"unit": "parks"}):
        paged = [
            r for p in fleet.all_pages("/api/v1/vulnerabilities", limit=1, **params) for r in p
        ]
        assert paged == fleet.get("/api/v1/vulnerabilities", **params).json()
        assert paged
    hosts = fleet.all_pages("/api/v1/vulnerabilities/CVE-2024-0727", limit=1)
    assert [h["host_id"] for p in hosts for h in p] == ["db-01", "web-01"]


def test_bad_cursors_and_offsets_are_refused(fleet: Fleet) -> None:
    """A tampered cursor, one of other filters or of the other list, and an offset (paging
    by offset is gone) are refused with 400 saying what is wrong."""
    cursor = fleet.get("/api/v1/vulnerabilities", limit=3).headers["X-Next-Cursor"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    forged = base64.urlsafe_b64encode(raw.replace(b"db-01", b"web-0")).decode().rstrip("=")
    for params, words in (
        ({"cursor": forged}, "altered"),
        ({"cursor": cursor, "severity": "low"}, "other filters"),
        ({"offset": 3}, "X-Next-Cursor"),
    ):
        refused = fleet.get("/api/v1/vulnerabilities", **params)
        assert refused.status_code == 400, params
        assert words in refused.json()["detail"]
    other = fleet.get("/api/v1/vulnerabilities/CVE-2024-0727", cursor=cursor)
    assert other.status_code == 400
    assert "another list" in other.json()["detail"]
    assert fleet.get("/api/v1/vulnerabilities", limit=5001).status_code == 422


def test_a_cve_and_every_host_carrying_it(fleet: Fleet) -> None:
    """GET /vulnerabilities/{cve} lists each host, and when CISA listed it as exploited."""
    answer = fleet.get("/api/v1/vulnerabilities/CVE-2023-4911").json()
    assert answer["exploited_since"] == "2023-11-21"
    assert [h["host_id"] for h in answer["hosts"]] == ["web-01"]
    assert fleet.get("/api/v1/vulnerabilities/CVE-2099-0001").json()["hosts"] == []


def test_a_unit_reader_sees_its_units_hosts_only(fleet: Fleet) -> None:
    """A token limited to a unit sees its hosts' vulnerabilities, never another unit's."""
    made = fleet.fleetwatch(
        "token", "create", "--name", "water", "--kind", "read", "--unit", "water"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    rows = fleet.get("/api/v1/vulnerabilities", token=token).json()
    assert {r["host_id"] for r in rows} == {"db-01"}
    assert fleet.get("/api/v1/vulnerabilities", token=token, unit="parks").json() == []
    hosts = fleet.get("/api/v1/vulnerabilities/CVE-2024-0727", token=token).json()["hosts"]
    assert [h["host_id"] for h in hosts] == ["db-01"]
    assert fleet.get("/api/v1/vulnerability-data", token=token).status_code == 403


def test_command_line_lists_by_source_package_and_shows_status(fleet: Fleet) -> None:
    """`fleetwatch vulns` names CVEs with severity under their source package; status says
    what is loaded."""
    text = fleet.fleetwatch("vulns", "--host", "web-01")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "web-01"
    glibc = lines.index(next(line for line in lines if line.startswith("  glibc ")))
    assert lines[glibc].startswith("  glibc 2.36-9+deb12u1 (libc-bin, libc-dev-bin,")
    assert lines[glibc + 1] == "    CVE-2023-4911 (unrated, EXPLOITED, fixed in 2.36-9+deb12u3)"
    rows = json.loads(fleet.fleetwatch("vulns", "--cve", "CVE-2024-0727", "--json").stdout)
    assert {r["host_id"] for r in rows} == {"db-01", "web-01"}
    status = fleet.fleetwatch("vulns", "status")
    assert status.returncode == 0, status.stderr
    assert "debian-tracker" in status.stdout
    assert "kev" in status.stdout
    assert "7 vulnerabilities on 2 hosts" in status.stdout


def test_a_broken_import_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    """A truncated file is refused by the command line, and the data held stays."""
    before = fleet.get("/api/v1/vulnerability-data").json()
    broken = tmp_path / "tracker.json"
    broken.write_bytes(TRACKER.read_bytes()[:-100])
    refused = fleet.fleetwatch("vulns", "import", str(broken))
    assert refused.returncode == 1
    assert "nothing imported" in refused.stderr
    assert "not complete JSON" in refused.stderr
    assert fleet.get("/api/v1/vulnerability-data").json() == before


def test_metrics_count_what_the_api_lists(fleet: Fleet) -> None:
    """fleetwatch_vulnerabilities on /metrics counts the rows the API lists, by severity
    and exploited (glibc's KEV-listed CVE among them)."""
    listed = fleet.get("/api/v1/vulnerabilities").json()
    expected = Counter(
        (r["severity"] or "unrated", "true" if r["exploited"] else "false") for r in listed
    )
    text = fleet.get("/metrics").text
    exposed = {
        (s.labels["severity"], s.labels["exploited"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fleetwatch_vulnerabilities"
    }
    assert exposed == expected
    assert exposed[expected_exploited(listed)] >= 1


def expected_exploited(listed: list[dict[str, Any]]) -> tuple[str, str]:
    glibc = next(r for r in listed if r["source"] == "glibc")
    return (glibc["severity"] or "unrated", "true")
