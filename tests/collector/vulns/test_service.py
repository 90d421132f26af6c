"""Vulnerability data in the running collector: matched at each report, and every host
evaluated again when new data arrives (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report
from tests.collector.vulns.samples import KEV, TRACKER
from tests.helpers import full, make_report, section_data

POLICY = """
[defaults]
max_vulnerability_severity = "low"
fail_on_exploited = true
"""
OLD = {"glibc": "2.36-9+deb12u1", "openssl": "3.0.11-1~deb12u2"}


def packages(**versions: str) -> dict[str, Any]:
    """The captured Debian 12 package list, with these source packages at other versions."""
    data = section_data("packages")
    data["packages"] = [
        [n, versions.get(s, v), a, s, versions.get(s, sv)] for n, v, a, s, sv in data["packages"]
    ]
    return data


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[CollectorService]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    svc = CollectorService(
        CollectorSettings(
            database_url=database_url,
            policy=policy,
            enroll_secret="s3cret",
            data_dir=tmp_path,
            policy_check_interval=3600,  # rounds are run by the tests, not the thread
        )
    )
    svc.start()
    svc.identity.enroll("web-01", "s3cret")
    yield svc
    svc.stop()


def report(svc: CollectorService, sequence: int, **versions: str) -> None:
    sections = {
        "system": full("system", section_data("system")),
        "packages": full("packages", packages(**versions)),
        "updates": full("updates", section_data("updates", updates=[])),
    }
    body = make_report("web-01", sequence, sections)
    svc.ingestor.ingest(Report.model_validate(body), "web-01")


def findings(svc: CollectorService) -> dict[str, tuple[str, str]]:
    with svc.store.read() as conn:
        rows = svc.store.findings.open_for(conn, "web-01")
    return {f.key: (f.severity, f.detail) for f in rows if f.rule == "vulnerabilities"}


def carried(svc: CollectorService) -> set[tuple[str, str]]:
    with svc.store.read() as conn:
        rows = svc.store.host_vulnerabilities.of_hosts(conn, ["web-01"])["web-01"]
    return set(rows)


def test_new_data_evaluates_every_host_without_a_report(service: CollectorService) -> None:
    """Hosts that reported before the data came are matched by the housekeeper's next round."""
    report(service, 1, **OLD)
    assert findings(service) == {}
    service.vulnerabilities.import_path(TRACKER)
    service.vulnerabilities.import_path(KEV)
    service.housekeeper.round()
    assert carried(service) == {
        ("CVE-2023-4911", "glibc"),
        ("CVE-2024-0727", "openssl"),
        ("CVE-2005-2541", "tar"),
        ("CVE-2025-0725", "curl"),
    }
    found = findings(service)
    assert set(found) == {"glibc", "openssl"}  # tar is unimportant, curl's low is allowed
    assert found["glibc"][0] == "critical"
    assert "CVE-2023-4911 (unrated; exploited; fixed in 2.36-9+deb12u3" in found["glibc"][1]
    assert found["openssl"][0] == "medium"


def test_a_report_with_the_fix_resolves_the_finding(service: CollectorService) -> None:
    """Once the host reports the fixed version, its finding resolves and the match is gone."""
    service.vulnerabilities.import_path(TRACKER)
    service.housekeeper.round()
    report(service, 1, **OLD)
    assert set(findings(service)) == {"glibc", "openssl"}
    with service.store.read() as conn:
        first = service.store.host_vulnerabilities.of_hosts(conn, ["web-01"])["web-01"]
    report(service, 2, openssl=OLD["openssl"])
    assert set(findings(service)) == {"openssl"}
    with service.store.read() as conn:
        second = service.store.host_vulnerabilities.of_hosts(conn, ["web-01"])["web-01"]
    assert ("CVE-2023-4911", "glibc") not in second
    key = ("CVE-2024-0727", "openssl")
    assert second[key].first_seen == first[key].first_seen  # still there: first seen kept
