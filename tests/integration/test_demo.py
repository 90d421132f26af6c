"""The README's first quick-start command: `fleetwatch demo` starts a collector on SQLite,
runs this machine's real agent once against it, and prints the hosts table."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwatch.collector.admin.demo import EXAMPLE_POLICY
from tests.helpers import free_port

BIN = Path(sys.executable).parent


def test_the_example_policy_ships_where_the_demo_reads_it() -> None:
    """The demo's example policy is a file of the collector package."""
    assert EXAMPLE_POLICY.is_file()


def test_the_demo_reports_this_machine(tmp_path: Path) -> None:
    """The demo ends with status 0 and a hosts table naming this machine."""
    done = subprocess.run(
        # a port of its own: 8470, the default, may be taken on this machine
        [
            str(BIN / "fleetwatch"),
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "HOST" in done.stdout
    assert socket.gethostname() in done.stdout
    assert (tmp_path / "demo" / "fleetwatch.db").is_file()


def test_the_demo_names_vulnerabilities_by_source_package(tmp_path: Path) -> None:
    """Given vulnerability data, the demo ends with this machine's CVEs under their source
    package, with severity and fixed version."""
    os_release = Path("/etc/os-release").read_text()
    codename = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in os_release.splitlines()
            if line.startswith("VERSION_CODENAME=")
        ),
        None,
    )
    if not codename or "ID=debian" not in os_release:
        pytest.skip("the demo's vulnerability test needs a Debian machine")
    # an issue in dpkg (installed on every Debian machine) in the tracker's format: the
    # tracker names issues without a CVE TEMP-..., as this made-up one is
    data = {
        "dpkg": {
            "TEMP-0000000-F1EE7A": {
                "description": "an issue made up for this test",
                "scope": "local",
                "releases": {
                    codename: {
                        "status": "resolved",
                        "repositories": {codename: "99.0"},
                        "fixed_version": "99.0",
                        "urgency": "high",
                    }
                },
            }
        }
    }
    tracker = tmp_path / "tracker.json"
    tracker.write_text(json.dumps(data))
    done = subprocess.run(
        [
            str(BIN / "fleetwatch"),
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--vulnerabilities",
            str(tracker),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "imported vulnerability data debian-tracker: 1 entries" in done.stdout
    shown = done.stdout.split("vulnerabilities, by source package:", 1)[1]
    assert "\n  dpkg " in shown
    assert "    TEMP-0000000-F1EE7A (high, fixed in 99.0)" in shown
    # the finding names it too, at the data's severity, without waiting out a grace period
    assert "vulnerabilities  high" in done.stdout
