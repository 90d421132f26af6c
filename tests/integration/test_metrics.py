"""/metrics of the real collector with two worker processes, after real reports: valid
exposition (promtool), and figures that add up to what was sent and to what the API says."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CollectorProcess, make_report

PROMTOOL = shutil.which("promtool")
POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 600

[hosts."web-01"]
unit = "parks"

[hosts."web-02"]
unit = "parks"

[hosts."db-01"]
unit = "water"

[hosts."never-01"]
unit = "water"
"""
REPORTING = ["web-01", "web-02", "db-01", "stray-01"]  # stray-01: enrolled, in no unit

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def collector(tmp_path: Path, database_url: str) -> Iterator[CollectorProcess]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    process = CollectorProcess(
        tmp_path,
        database_url,
        policy=policy,
        extra_env={
            "FLEETWATCH_WORKERS": "2",
            "FLEETWATCH_METRICS_DIR": str(tmp_path / "metrics"),
            "FLEETWATCH_METRICS_CACHE_SECONDS": "0",
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()


def scrape(collector: CollectorProcess, token: str | None = None) -> requests.Response:
    # a new connection each time: either worker may answer
    return requests.get(
        collector.url + "/metrics",
        headers={"Authorization": f"Bearer {token or collector.admin_token}"},
        timeout=30,
    )


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def per_process(metrics_dir: Path, name: str, **labels: str) -> dict[int, float]:
    """A counter's value in each worker's own file of the metrics directory."""
    values: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, sample_value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample_name, sample_labels, _help = json.loads(key)
            if sample_name == name and sample_labels == labels:
                values[pid] = values.get(pid, 0.0) + sample_value
    return values


def enroll(collector: CollectorProcess, host_id: str) -> str:
    response = requests.post(
        collector.url + "/api/v1/enroll",
        json={"host_id": host_id, "enroll_secret": collector.enroll_secret},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["token"])


def post_report(collector: CollectorProcess, token: str, body: object) -> requests.Response:
    return requests.post(
        collector.url + "/api/v1/report",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is missing")
def test_two_workers_add_up_to_what_was_sent(collector: CollectorProcess, tmp_path: Path) -> None:
    """Reports stored, duplicates and refusals spread over two workers are summed in every
    scrape, whichever worker answers it; the fleet figures agree with the API; promtool
    accepts the exposition."""
    tokens = {host_id: enroll(collector, host_id) for host_id in REPORTING}
    for host_id, token in tokens.items():
        assert post_report(collector, token, make_report(host_id, 1)).json()["status"] == "stored"
    for host_id in ("web-01", "db-01"):  # delivered again: a duplicate
        answer = post_report(collector, tokens[host_id], make_report(host_id, 1))
        assert answer.json()["status"] == "duplicate"
    # refused reports, each on a new connection, until both workers have refused some
    refused = 0
    metrics_dir = tmp_path / "metrics"
    while refused < 200:
        answer = post_report(collector, "fwh_unknown", make_report("web-01", 2))
        assert answer.status_code == 401
        refused += 1
        workers = per_process(metrics_dir, "fleetwatch_reports_received_total", outcome="refused")
        if refused >= 10 and len([v for v in workers.values() if v]) >= 2:
            break
    assert len([v for v in workers.values() if v]) == 2, f"one worker took every report: {workers}"
    assert sum(workers.values()) == refused

    hosts = collector.api("/api/v1/hosts")
    findings = collector.api("/api/v1/findings", open="true")
    unit_of = {h["host_id"]: h["unit"] or "" for h in hosts}
    expected_hosts = Counter((h["unit"] or "", h["status"]) for h in hosts)
    expected_findings = Counter((unit_of[f["host_id"]], f["rule"], f["severity"]) for f in findings)
    assert expected_findings, "the captured report should break the baseline somewhere"

    for _ in range(8):
        response = scrape(collector)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert value(found, "fleetwatch_reports_received_total", outcome="stored") == 4
        assert value(found, "fleetwatch_reports_received_total", outcome="duplicate") == 2
        assert value(found, "fleetwatch_reports_received_total", outcome="refused") == refused
        assert value(found, "fleetwatch_refusals_total", reason="unknown_token") == refused
        # every report that reached the writer: the stored and the duplicates
        assert value(found, "fleetwatch_ingest_latency_seconds_count") == 6
        assert value(found, "fleetwatch_ingest_batch_size_sum") == 6
        assert value(found, "fleetwatch_ingest_queue_depth") == 0
        for (unit, status), count in expected_hosts.items():
            assert value(found, "fleetwatch_hosts", unit=unit, status=status) == count
        hosts_total = sum(v for (name, _), v in found.items() if name == "fleetwatch_hosts")
        assert hosts_total == len(REPORTING) + 1  # never-01 is in the policy only
        assert value(found, "fleetwatch_hosts", unit="water", status="never_reported") == 1
        for (unit, rule, severity), count in expected_findings.items():
            labels = {"unit": unit, "rule": rule, "severity": severity}
            assert value(found, "fleetwatch_open_findings", **labels) == count
        open_total = sum(v for (name, _), v in found.items() if name == "fleetwatch_open_findings")
        assert open_total == len(findings)
        assert value(found, "fleetwatch_last_report_received_timestamp_seconds") > 0

    check = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=scrape(collector).content,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_metrics_need_a_token_that_sees_the_whole_fleet(collector: CollectorProcess) -> None:
    """No token: 401; a token limited to one unit: 403 (the figures name every unit); a
    fleet-wide read token: 200."""
    assert requests.get(collector.url + "/metrics", timeout=10).status_code == 401

    def token(kind: str, unit: str | None) -> str:
        response = requests.post(
            collector.url + "/api/v1/tokens",
            json={"name": f"prometheus-{kind}-{unit}", "kind": kind, "unit": unit},
            headers={"Authorization": f"Bearer {collector.admin_token}"},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["token"])

    assert scrape(collector, token("read", "parks")).status_code == 403
    reader = scrape(collector, token("read", None))
    assert reader.status_code == 200
    assert "fleetwatch_hosts" in reader.text


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_temporary_directory_is_counted_in_and_goes_at_exit(
    tmp_path: Path, workers: str
) -> None:
    """`serve` without metrics_dir, with one worker as with two: the same multiprocess
    counting, in a temporary directory of its own, which is gone when the collector stops."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = CollectorProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'fleetwatch.db'}",
        extra_env={"TMPDIR": str(temporary), "FLEETWATCH_WORKERS": workers},
    ).start()
    try:
        made = list(temporary.glob("fleetwatch-metrics-*"))
        assert len(made) == 1
        assert post_report(process, "fwh_unknown", make_report("web-01", 1)).status_code == 401
        assert list(made[0].glob("counter_*.db")), "the worker writes its counters there"
        found = samples(scrape(process).text)
        assert value(found, "fleetwatch_reports_received_total", outcome="refused") == 1
    finally:
        process.stop()
    assert list(temporary.iterdir()) == []
