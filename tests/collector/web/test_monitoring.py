"""The monitoring files in docs/: the alerting rules load and fire as intended (promtool), the
Grafana dashboard is valid and asks only for metrics the collector exposes, and docs/metrics.md
describes every metric."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.helpers import FIXTURES, make_report, ports_section

ROOT = Path(__file__).parents[3]
RULES = ROOT / "docs" / "monitoring" / "fleetwatch-rules.yml"
RULES_TEST = FIXTURES / "monitoring" / "fleetwatch-rules.test.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "fleetwatch-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
PROMTOOL = shutil.which("promtool")
ADMIN = "admin-token-for-monitoring"
SECRET = "enroll-secret-for-monitoring"
METRIC_NAME = re.compile(r"\bfleetwatch_[a-z_]+\b")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian's prometheus package) is missing"
)


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every metric and sample name of /metrics, after a report with an open finding."""
    tmp_path = tmp_path_factory.mktemp("monitoring")
    policy = tmp_path / "policy.toml"
    policy.write_text('[defaults]\nallowed_ports = ["tcp/22"]\n')
    settings = CollectorSettings(
        data_dir=tmp_path,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        metrics_cache_seconds=0,
        metrics_dir=None,  # this process's metrics, whatever the environment says
    )
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": SECRET}
        ).json()["token"]
        report = make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 2323))})
        client.post("/api/v1/report", json=report, headers={"Authorization": f"Bearer {token}"})
        text = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    # every metric declared (a labelled counter with no sample yet is declared all the same),
    # with the sample names a histogram adds
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    # tcp/2323 is not allowed: a finding is open, so its age is exposed too
    assert "fleetwatch_oldest_open_finding_age_seconds{" in text, text
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    return exprs


@needs_promtool
def test_the_alerting_rules_load() -> None:
    """promtool accepts the rules file."""
    check = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


@needs_promtool
def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    """A unit's critical finding past a week, reports that stop arriving: each alert fires,
    with its labels and text, and not before its time nor in a healthy fleet."""
    run = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query parses (promtool reads them as recording rules, with the unit
    variable given a value as Grafana would)."""
    exprs = [e for e in _dashboard_exprs() if not e.startswith("label_values(")]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e.replace("$unit", ".*")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_dashboard_asks_only_for_metrics_that_exist(exposed: set[str]) -> None:
    """Every fleetwatch_ name in a panel, in the unit variable's query, and in the alerting
    rules is a sample the collector exposes."""
    referenced = {name for e in _dashboard_exprs() for name in METRIC_NAME.findall(e)}
    referenced |= set(METRIC_NAME.findall(RULES.read_text()))
    assert referenced, "the dashboard queries no fleetwatch metric"
    assert referenced - exposed == set()


def test_the_dashboard_is_importable_json() -> None:
    """Grafana's import needs a title, a uid, panels with ids of their own, and the data
    source as an input."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]


def test_every_metric_is_documented(exposed: set[str]) -> None:
    """docs/metrics.md names every fleetwatch_ metric the collector exposes."""
    text = METRICS_DOC.read_text()
    families = {
        re.sub(r"_(total|created|bucket|count|sum)$", "", name)
        for name in exposed
        if name.startswith("fleetwatch_")
    }
    missing = {f for f in families if f not in text}
    assert missing == set()
