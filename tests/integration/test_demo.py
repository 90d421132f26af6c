"""The README's first quick-start command: `fleetwatch demo` starts a collector on SQLite,
runs this machine's real agent once against it, and prints the hosts table."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

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
