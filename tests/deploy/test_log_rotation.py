"""The log rotation the deploy installs on hosts without systemd: the real logrotate rotates a
log that start-stop-daemon feeds, and the service's next lines land in the fresh file."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleetwatch.deploy.deploys.service import logrotate_text

pytestmark = pytest.mark.skipif(
    shutil.which("logrotate") is None or shutil.which("start-stop-daemon") is None,
    reason="needs logrotate and start-stop-daemon (apt-get install logrotate)",
)


def grow(log: Path, size: int) -> None:
    """Wait until the (backgrounded) service wrote ``size`` bytes to its log."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and log.stat().st_size >= size:
            return
        time.sleep(0.05)
    pytest.fail(f"{log} did not grow to {size} bytes")


def test_logrotate_accepts_the_configuration(tmp_path: Path) -> None:
    """logrotate's own parser finds no error in what the deploy writes."""
    config = tmp_path / "fleetwatch-agent"
    config.write_text(logrotate_text(str(tmp_path / "agent.log")))
    done = subprocess.run(
        ["logrotate", "--debug", "--state", str(tmp_path / "state"), str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower()


def test_a_running_service_keeps_logging_after_rotation(tmp_path: Path) -> None:
    """copytruncate on an O_APPEND log: old lines in .1, new lines from the start of the
    fresh file, no hole of NUL bytes."""
    log = tmp_path / "agent.log"
    pidfile = tmp_path / "agent.pid"
    config = tmp_path / "fleetwatch-agent"
    config.write_text(logrotate_text(str(log)))
    subprocess.run(
        [
            "start-stop-daemon",
            "--start",
            "--background",
            "--make-pidfile",
            "--pidfile",
            str(pidfile),
            "--output",
            str(log),
            "--startas",
            "/bin/sh",
            "--",
            "-c",
            "n=0; while :; do n=$((n+1)); echo line $n; sleep 0.02; done",
        ],
        check=True,
    )
    try:
        grow(log, 2000)
        subprocess.run(
            ["logrotate", "--force", "--state", str(tmp_path / "state"), str(config)], check=True
        )
        rotated = (tmp_path / "agent.log.1").read_text()
        assert rotated.startswith("line 1\n")
        grow(log, 200)
        fresh = log.read_bytes()
        assert b"\x00" not in fresh
        last_rotated = int(rotated.strip().splitlines()[-1].split()[1])
        first_fresh = int(fresh.decode().splitlines()[0].split()[1])
        assert first_fresh > last_rotated
    finally:
        pid = int(pidfile.read_text())
        subprocess.run(["kill", f"-{int(signal.SIGTERM)}", str(pid)], check=False)
