"""`fleetwatch hosts`, `findings`, `waivers` and `vulns` page through a real collector's
lists."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import Connection, insert

from fleetwatch.collector.admin.client import PAGE
from fleetwatch.collector.storage.engine import make_engine
from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerability
from fleetwatch.collector.storage.tables import host_vulnerabilities, waivers
from fleetwatch.collector.storage.waivers import NewWaiver
from tests.helpers import CollectorProcess, make_report

BIN = Path(sys.executable).parent
HOSTS = PAGE + 321  # two pages of the CLI's
UNITS = ("parks", "water")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A collector on SQLite whose policy lists more hosts than one page holds; one reported."""
    tmp = tmp_path_factory.mktemp("paging-cli")
    policy = tmp / "policy.toml"
    lines = ["[defaults]", 'allowed_ports = ["tcp/22"]', ""]
    for i in range(HOSTS):
        lines += [f'[hosts."h{i:05d}"]', f'unit = "{UNITS[i % 2]}"', ""]
    policy.write_text("\n".join(lines))
    process = CollectorProcess(tmp, f"sqlite:///{tmp / 'fleetwatch.db'}", policy=policy)
    process.start(timeout=120)
    try:
        token = requests.post(
            process.url + "/api/v1/enroll",
            json={"host_id": "h00000", "enroll_secret": process.enroll_secret},
            timeout=30,
        ).json()["token"]
        stored = requests.post(
            process.url + "/api/v1/report",
            json=make_report("h00000", 1),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert stored.status_code == 200, stored.text
        yield process
    finally:
        process.stop()


def fleetwatch(collector: CollectorProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update({"FLEETWATCH_API_URL": collector.url, "FLEETWATCH_API_TOKEN": collector.admin_token})
    return subprocess.run(
        [str(BIN / "fleetwatch"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestHostsCommand:
    def test_json_holds_every_host_once_across_pages(self, collector: CollectorProcess) -> None:
        """--json prints one list of every host, though the API gave them in two pages."""
        done = fleetwatch(collector, "hosts", "--json")
        assert done.returncode == 0, done.stderr
        hosts = [h["host_id"] for h in json.loads(done.stdout)]
        assert hosts == [f"h{i:05d}" for i in range(HOSTS)]

    def test_table_has_one_header_and_every_row(self, collector: CollectorProcess) -> None:
        done = fleetwatch(collector, "hosts", "--unit", "water")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("HOST")
        assert sum(line.startswith("HOST") for line in lines) == 1
        assert [line.split()[0] for line in lines[1:]] == [f"h{i:05d}" for i in range(1, HOSTS, 2)]

    def test_limit_stops_early(self, collector: CollectorProcess) -> None:
        """--limit 7 prints the first seven hosts and asks for no more."""
        done = fleetwatch(collector, "hosts", "--limit", "7", "--json")
        assert [h["host_id"] for h in json.loads(done.stdout)] == [f"h{i:05d}" for i in range(7)]
        refused = fleetwatch(collector, "hosts", "--limit", "0")
        assert refused.returncode != 0
        assert "invalid count value" in refused.stderr


class TestFindingsCommand:
    def test_findings_page_and_stop_at_the_limit(self, collector: CollectorProcess) -> None:
        every = json.loads(fleetwatch(collector, "findings", "--json").stdout)
        assert every
        assert {f["host_id"] for f in every} == {"h00000"}
        first = json.loads(fleetwatch(collector, "findings", "--json", "--limit", "1").stdout)
        assert first == every[:1]


def rows_added(collector: CollectorProcess, write: Callable[[Connection], object]) -> None:
    """Rows written straight into the collector's database (a page's worth of API calls
    would take minutes)."""
    engine = make_engine(collector.env["FLEETWATCH_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            write(conn)
    finally:
        engine.dispose()


class TestWaiversAndVulnsCommands:
    def test_waivers_page_through_every_waiver_once(self, collector: CollectorProcess) -> None:
        """`fleetwatch waivers` lists more waivers than a page holds, newest first, once
        each."""
        now = datetime.now(UTC)
        one = NewWaiver("api", None, "host", "", "allowed_ports", "*", "r", "o", "admin", now,
                        now + timedelta(days=300))  # fmt: skip
        added = [dataclasses.asdict(one) | {"target": f"gone-{i:05d}"} for i in range(PAGE + 3)]
        rows_added(collector, lambda conn: conn.execute(insert(waivers), added))
        done = fleetwatch(collector, "waivers", "--json")
        assert done.returncode == 0, done.stderr
        targets = [w["target"] for w in json.loads(done.stdout)]
        assert targets == [f"gone-{i:05d}" for i in reversed(range(PAGE + 3))]

    def test_vulns_page_through_and_print_a_host_once(self, collector: CollectorProcess) -> None:
        """`fleetwatch vulns` follows the cursor: a host whose vulnerabilities fill more
        than a page is printed once, with every one of them."""
        one = HostVulnerability(
            "h00000", "", "pkg", "bookworm", "1.0", "1.1", "open", "low", None, None, False,
            False, [], [], ["pkg"], None, None, datetime.now(UTC),
        )  # fmt: skip
        added = [dataclasses.asdict(one) | {"vuln": f"CVE-2099-{i:05d}"} for i in range(PAGE + 3)]
        rows_added(collector, lambda conn: conn.execute(insert(host_vulnerabilities), added))
        done = fleetwatch(collector, "vulns")
        assert done.returncode == 0, done.stderr
        text = done.stdout.splitlines()
        assert text[:2] == ["h00000", f"  pkg 1.0 (pkg): {PAGE + 3} vulnerabilities"]
        listed = [line.split()[0] for line in text[2:]]
        assert listed == [f"CVE-2099-{i:05d}" for i in range(PAGE + 3)]
