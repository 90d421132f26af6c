"""`fleetwatch policy check` warns of a min_versions entry without the epoch hosts report.

The real collector over HTTP, hosts reporting the packages captured on a Debian 12 machine
(diffutils is 1:3.8-4 there), and the real `fleetwatch` command.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest
import requests

from tests.helpers import BIN, CollectorProcess, full, make_report, section_data

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

COLLECTOR_POLICY = """
[hosts."web-01"]
unit = "parks"

[hosts."db-01"]
unit = "water"
"""

CHECKED_POLICY = """
[defaults]
min_versions = { "diffutils" = "3.8-4", "bash" = "5.0" }

[groups.careful]
min_versions = { "diff*" = "1:3.8-4" }

[hosts."web-01"]
unit = "parks"

[hosts."db-01"]
unit = "water"
groups = ["careful"]
"""


@pytest.fixture
def collector(database_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    policy = tmp_path / "collector-policy.toml"
    policy.write_text(COLLECTOR_POLICY)
    process = CollectorProcess(tmp_path, database_url, policy).start()
    try:
        yield process
    finally:
        process.stop()


def _report(collector: CollectorProcess, host_id: str) -> None:
    enrolled = requests.post(
        collector.url + "/api/v1/enroll",
        json={"host_id": host_id, "enroll_secret": collector.enroll_secret},
        timeout=10,
    )
    token = enrolled.json()["token"]
    sections = {"packages": full("packages", section_data("packages"))}
    answer = requests.post(
        collector.url + "/api/v1/report",
        json=make_report(host_id, 1, sections),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def _check(collector: CollectorProcess, policy: Path, token: str, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update({"FLEETWATCH_API_URL": collector.url, "FLEETWATCH_API_TOKEN": token,
                "FLEETWATCH_ALLOW_INSECURE_HTTP": "true"})  # fmt: skip
    done = subprocess.run(
        [str(BIN / "fleetwatch"), "policy", "check", str(policy), *extra],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
def test_policy_check_warns_of_a_missing_epoch(collector: CollectorProcess, tmp_path: Path) -> None:
    """Only hosts whose baseline keeps the epoch-less entry are named; with an epoch, none."""
    _report(collector, "web-01")
    _report(collector, "db-01")
    policy = tmp_path / "policy.toml"
    policy.write_text(CHECKED_POLICY)
    out = _check(collector, policy, collector.admin_token)
    assert "2 hosts, 1 groups; valid" in out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    expected = (
        "warning: min_versions diffutils = '3.8-4' has no epoch, but diffutils has epoch 1 on "
        "1 reporting host (web-01): every such version meets it; write '1:3.8-4'"
    )
    assert warnings == [expected]
    assert "warning" not in _check(collector, policy, collector.admin_token, "--offline")


@pytest.mark.slow
def test_unit_reader_sees_only_its_hosts(collector: CollectorProcess) -> None:
    """The package versions API is unit-scoped: a water reader never sees web-01 (parks)."""
    _report(collector, "web-01")
    _report(collector, "db-01")
    made = requests.post(
        collector.url + "/api/v1/tokens",
        json={"name": "water", "kind": "read", "unit": "water"},
        headers={"Authorization": f"Bearer {collector.admin_token}"},
        timeout=10,
    )
    water = made.json()["token"]
    answer = requests.get(
        collector.url + "/api/v1/packages/installed",
        params={"name": ["diffutils", "no-such-package"]},
        headers={"Authorization": f"Bearer {water}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"hosts": {"db-01": {"diffutils": ["1:3.8-4"]}}}
    assert collector.api("/api/v1/packages/installed", name="diff*")["hosts"].keys() == {
        "web-01",
        "db-01",
    }
    unauthenticated = requests.get(
        collector.url + "/api/v1/packages/installed", params={"name": "x"}, timeout=10
    )
    assert unauthenticated.status_code == 401
