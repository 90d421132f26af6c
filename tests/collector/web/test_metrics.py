"""/metrics in process: the fleet figures' cache, the figures against stored hosts and
findings, and the multiprocess directory's housekeeping."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from fleetwatch.collector.web.metrics import FleetCollector, FleetFigures, read_fleet_figures
from fleetwatch.collector.web.metrics_files import forget_dead_workers, prepare_metrics_dir
from fleetwatch.collector.web.views import host_summary
from tests.helpers import make_report, ports_section

ADMIN = "admin-token-for-metrics"
SECRET = "enroll-secret-for-metrics"
POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 600

[hosts."web-01"]
unit = "parks"

[hosts."web-02"]
unit = "parks"
"""


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    settings = CollectorSettings(
        database_url=database_url,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        metrics_cache_seconds=0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def report(client: TestClient, host_id: str, sequence: int, body: dict[str, object]) -> None:
    token = client.post(
        "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": SECRET}
    ).json()["token"]
    answer = client.post("/api/v1/report", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def gauges(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == name
    }


class TestFleetFigures:
    def test_hosts_by_unit_and_status(self, client: TestClient) -> None:
        """A compliant and a noncompliant host of one unit, a stale host of none: each
        counted once, with every status of a unit present (zero where none)."""
        quiet = make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 22))})
        report(client, "web-01", 1, quiet)
        loud = make_report("web-02", 1, {"ports": ports_section(("tcp", "0.0.0.0", 2323))})
        report(client, "web-02", 1, loud)
        old = datetime.now(UTC) - timedelta(hours=2)
        stale = make_report("db-09", 1, {"ports": ports_section(("tcp", "0.0.0.0", 22))})
        stale["collected_at"] = old.isoformat()
        report(client, "db-09", 1, stale)

        hosts = gauges(client, "fleetwatch_hosts")
        assert hosts == {
            (("status", "compliant"), ("unit", "parks")): 1,
            (("status", "noncompliant"), ("unit", "parks")): 1,
            (("status", "stale"), ("unit", "parks")): 0,
            (("status", "never_reported"), ("unit", "parks")): 0,
            (("status", "compliant"), ("unit", "")): 0,
            (("status", "noncompliant"), ("unit", "")): 0,
            (("status", "stale"), ("unit", "")): 1,
            (("status", "never_reported"), ("unit", "")): 0,
        }
        findings = gauges(client, "fleetwatch_open_findings")
        assert findings == {(("rule", "allowed_ports"), ("severity", "high"), ("unit", "parks")): 1}
        assert sum(findings.values()) == len(
            client.get(
                "/api/v1/findings",
                params={"open": "true"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ).json()
        )
        ages = gauges(client, "fleetwatch_oldest_open_finding_age_seconds")
        assert ages, "web-02's open finding has an age"
        assert all(0 <= age < 60 for age in ages.values())

    def test_a_host_the_policy_moves_to_another_unit_counts_there(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        """web-02 enrolled into parks; the policy now puts it in water: its host and its
        findings count in water, as the API shows them."""
        loud = make_report("web-02", 1, {"ports": ports_section(("tcp", "0.0.0.0", 2323))})
        report(client, "web-02", 1, loud)
        report(
            client,
            "web-01",
            1,
            make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 2424))}),
        )
        (tmp_path / "policy.toml").write_text(
            POLICY.replace('[hosts."web-02"]\nunit = "parks"', '[hosts."web-02"]\nunit = "water"')
        )
        reload = client.post("/api/v1/policy/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert reload.json()["changed"] is True
        hosts = client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert {h["host_id"]: h["unit"] for h in hosts} == {"web-01": "parks", "web-02": "water"}

        assert gauges(client, "fleetwatch_open_findings") == {
            (("rule", "allowed_ports"), ("severity", "high"), ("unit", "parks")): 1,
            (("rule", "allowed_ports"), ("severity", "high"), ("unit", "water")): 1,
        }
        assert (
            gauges(client, "fleetwatch_hosts")[("status", "noncompliant"), ("unit", "water")] == 1
        )
        assert set(gauges(client, "fleetwatch_oldest_open_finding_age_seconds")) == {
            (("severity", "high"), ("unit", "parks")),
            (("severity", "high"), ("unit", "water")),
        }

    def test_a_unit_token_may_not_read_them(self, client: TestClient) -> None:
        """The figures name every unit: a token limited to one is refused with 403."""
        created = client.post(
            "/api/v1/tokens",
            json={"name": "parks-reader", "kind": "read", "unit": "parks"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {created['token']}"})
        assert answer.status_code == 403


class TestFleetCollector:
    def test_figures_are_read_at_most_once_per_max_age(self) -> None:
        """Scrapes within max_age are answered from the figures already read; the next
        scrape after it reads them again."""
        now = [0.0]
        reads: list[float] = []

        def read() -> FleetFigures:
            reads.append(now[0])
            return FleetFigures(hosts={("parks", "compliant"): len(reads)})

        collector = FleetCollector(read, max_age=15, clock=lambda: now[0])
        first = list(collector.collect())
        now[0] = 14.9
        list(collector.collect())
        assert reads == [0.0]
        now[0] = 15.0
        again = list(collector.collect())
        assert reads == [0.0, 15.0]
        assert first[0].samples[0].value == 1
        assert again[0].samples[0].value == 2


class TestMetricsDirectory:
    def test_a_given_directory_is_emptied_and_named_for_the_workers(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Values of an earlier run would be added to this one's: they are removed, and the
        workers are told where the directory is."""
        # (set first, so that the test's end puts back what was there)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
        monkeypatch.setenv("FLEETWATCH_METRICS_DIR", "")
        given = tmp_path / "metrics"
        given.mkdir()
        (given / "counter_123.db").write_bytes(b"old")
        path, made = prepare_metrics_dir(given)
        assert (path, made) == (given, False)
        assert list(given.iterdir()) == []
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(given)

    def test_live_gauges_of_dead_workers_are_dropped_and_counters_kept(
        self, tmp_path: Path
    ) -> None:
        """A worker that is gone leaves its queue depth out of the sum; its counts stay."""
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        dead_pid = int(dead.stdout)
        alive_pid = os.getpid()
        for name in (
            f"gauge_livesum_{dead_pid}.db",
            f"gauge_livesum_{alive_pid}.db",
            f"counter_{dead_pid}.db",
        ):
            (tmp_path / name).write_bytes(b"")
        assert forget_dead_workers(tmp_path) == [dead_pid]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"gauge_livesum_{alive_pid}.db", f"counter_{dead_pid}.db"]
        )


def test_the_fleet_figures_never_read_the_reports_table(client: TestClient) -> None:
    """The kept counts of hosts (and the stale ones by index), open findings, what hosts
    carry and the newest report: a handful of statements, none naming the reports table,
    which grows with every report."""
    report(
        client,
        "web-02",
        1,
        make_report("web-02", 1, {"ports": ports_section(("tcp", "0.0.0.0", 2323))}),
    )
    svc = client.app.state.service  # type: ignore[attr-defined]
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(svc.engine, "before_cursor_execute", seen)
    try:
        figures = read_fleet_figures(svc)
    finally:
        event.remove(svc.engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) <= 6, reads
    assert not [s for s in reads if re.search(r"\breports\b", s)], reads
    assert sum(figures.open_findings.values()) >= 1


class TestOverdueFindings:
    def test_overdue_by_unit_and_severity_leaves_waived_out(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        """With high findings due in 7 days: none overdue now (0, as the unit has open high
        findings); eight days on, web-01's is overdue and web-02's, waived, is not; once the
        housekeeper announced it overdue it counts as such."""
        (tmp_path / "policy.toml").write_text(POLICY + "\n[due_days]\nhigh = 7\n")
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/policy/reload", headers=admin).json()["changed"] is True
        for host_id, port in (("web-01", 2323), ("web-02", 2424)):
            loud = make_report(host_id, 1, {"ports": ports_section(("tcp", "0.0.0.0", port))})
            report(client, host_id, 1, loud)
        waiver = {
            "scope": "host", "target": "web-02", "rule": "allowed_ports", "subject": "*",
            "reason": "retired this week", "owner": "parks",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        }  # fmt: skip
        answer = client.post("/api/v1/waivers", json=waiver, headers=admin)
        assert answer.status_code == 200, answer.text

        assert gauges(client, "fleetwatch_overdue_findings") == {
            (("severity", "high"), ("unit", "parks")): 0
        }
        svc = client.app.state.service  # type: ignore[attr-defined]
        later = datetime.now(UTC) + timedelta(days=8)
        assert read_fleet_figures(svc, later).overdue == {("parks", "high"): 1}
        svc.casework.tick(later)  # announces web-01's finding overdue (sets overdue_at)
        assert gauges(client, "fleetwatch_overdue_findings") == {
            (("severity", "high"), ("unit", "parks")): 1
        }


SCAN_POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 600

[groups.slow]
max_report_age = 7200

[hosts."web-01"]
unit = "parks"

[hosts."web-02"]
unit = "parks"

[hosts."web-03"]
unit = "parks"
groups = ["slow"]

[hosts."db-01"]
unit = "water"

[hosts."db-02"]
unit = "water"
"""


def scanned(svc: Any, now: datetime) -> tuple[Counter[Any], Counter[Any]]:
    """Hosts by (unit, status) and open findings that count by (unit, rule, severity),
    worked out host by host from every stored row, as the API's views do."""
    policy = svc.policy.current
    with svc.store.read() as conn:
        rows = {h.host_id: h for h in svc.store.hosts.all(conn)}
        counting = [r for r in svc.store.findings.open_where(conn) if not r.waived]
    per_host = Counter(r.host_id for r in counting)
    hosts: Counter[Any] = Counter()
    unit_of = {}
    for host_id in set(rows) | set(policy.hosts):
        counts = {"any": per_host[host_id]} if per_host[host_id] else {}
        summary = host_summary(host_id, rows.get(host_id), counts, policy, now)
        unit_of[host_id] = summary.unit or ""
        hosts[unit_of[host_id], summary.status] += 1
    findings = Counter((unit_of[r.host_id], r.rule, r.severity) for r in counting)
    return hosts, findings


class TestFiguresAgainstAScan:
    def test_counts_equal_a_scan_as_hosts_change_status(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        """Hosts by unit and status, and open findings by unit, equal a count host by host
        from every row, as hosts report, open and close findings, are waived, move units,
        and go stale by their own report age."""
        (tmp_path / "policy.toml").write_text(SCAN_POLICY)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/policy/reload", headers=admin).json()["changed"] is True
        svc = client.app.state.service  # type: ignore[attr-defined]
        tokens: dict[str, str] = {}
        sequence: Counter[str] = Counter()

        def send(host_id: str, *ports: int, hours_ago: float = 0) -> None:
            if host_id not in tokens:
                tokens[host_id] = client.post(
                    "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": SECRET}
                ).json()["token"]
            sequence[host_id] += 1
            open_ports = (("tcp", "0.0.0.0", p) for p in (22, *ports))
            body = make_report(host_id, sequence[host_id], {"ports": ports_section(*open_ports)})
            if hours_ago:
                moment = datetime.now(UTC) - timedelta(hours=hours_ago)
                body["collected_at"] = moment.isoformat()
            answer = client.post(
                "/api/v1/report", json=body, headers={"Authorization": f"Bearer {tokens[host_id]}"}
            )
            assert answer.status_code == 200, answer.text

        def agree(now: datetime | None = None) -> None:
            now = now or datetime.now(UTC)
            figures = read_fleet_figures(svc, now)
            hosts, findings = scanned(svc, now)
            assert {k: v for k, v in figures.hosts.items() if v} == dict(hosts)
            assert figures.open_findings == dict(findings)
            exposed = gauges(client, "fleetwatch_hosts")
            assert sum(exposed.values()) == sum(hosts.values())

        send("web-01")
        send("web-02", 2323)
        send("web-03", hours_ago=1)  # within its group's two hours
        send("db-01", 2424, 2525)
        send("stray-01", 2626)  # not in the policy; db-02 never reports
        agree()
        send("web-02")  # its finding resolves
        send("web-01", 8080)  # one opens
        send("db-01", hours_ago=1.5)  # stale under the default ten minutes
        agree()
        waiver = {
            "scope": "host", "target": "web-01", "rule": "allowed_ports", "subject": "*",
            "reason": "r", "owner": "o",
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        }  # fmt: skip
        assert client.post("/api/v1/waivers", json=waiver, headers=admin).status_code == 200
        agree()
        moved = SCAN_POLICY.replace(
            '[hosts."web-02"]\nunit = "parks"', '[hosts."web-02"]\nunit = "water"'
        )
        (tmp_path / "policy.toml").write_text(moved + '\n[hosts."stray-01"]\nunit = "roads"\n')
        assert client.post("/api/v1/policy/reload", headers=admin).json()["changed"] is True
        agree()
        agree(datetime.now(UTC) + timedelta(minutes=30))  # web-01, web-02, stray-01 stale
        agree(datetime.now(UTC) + timedelta(hours=3))  # every host that reported
