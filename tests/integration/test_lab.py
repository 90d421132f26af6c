"""The lab itself: hosts of their own, and nothing left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lab import Lab, missing_requirements

pytestmark = pytest.mark.lab


def test_hosts_are_separate(make_lab: Any) -> None:
    """Each host has its own hostname, address and files; what one writes the others miss."""
    lab = make_lab(["alpha", "beta"])
    assert lab.ssh("alpha", "hostname").strip() == "alpha"
    assert lab.ssh("beta", "hostname").strip() == "beta"
    lab.ssh(
        "alpha",
        "mkdir -p /etc/fleetwatch && echo x > /etc/fleetwatch/probe && useradd --system probeuser",
    )
    assert lab.ssh("beta", "test -e /etc/fleetwatch/probe && echo yes || echo no").strip() == "no"
    assert lab.ssh("beta", "id probeuser >/dev/null 2>&1 && echo yes || echo no").strip() == "no"
    assert not Path("/etc/fleetwatch/probe").exists()
    beta = lab.host("beta").address
    assert (
        lab.ssh(
            "alpha",
            f"python3 -c \"import socket; socket.create_connection(('{beta}', 22), 3); print('ok')\"",
        ).strip()
        == "ok"
    )


def test_teardown_leaves_nothing_even_after_a_failure(tmp_path: Path) -> None:
    """A test that fails inside a lab still gets every namespace, link, mount and process removed."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    lab = Lab.create(Path(f"/tmp/fwlab-fail-{tmp_path.name[-8:]}"), ["gamma"])

    def failing_test() -> None:
        lab.spawn("gamma", ["sleep", "300"])  # a process that would outlive the test
        raise RuntimeError("the test fails here")

    try:
        with pytest.raises(RuntimeError):
            failing_test()
    finally:
        lab.destroy()
    assert lab.leftovers() == []


def test_processes_are_separate(make_lab: Any) -> None:
    """A host sees only its own processes: a process check or userdel is not fooled by another host."""
    lab = make_lab(["delta", "epsilon"])
    marker = lab.spawn("delta", ["sleep", "301"])
    try:
        assert "sleep 301" in lab.ssh("delta", "ps -eo args")
        assert "sleep 301" not in lab.ssh("epsilon", "ps -eo args")
    finally:
        marker.kill()
        marker.wait()


def test_without_root_the_lab_says_so_and_stops() -> None:
    """Run as an ordinary user, `python -m tests.lab up` explains and exits, building nothing."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to run the command as another user")
    root = Path(__file__).parent.parent.parent
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "tests.lab",
            "--dir",
            "/tmp/fwlab-nobody",
            "up",
            "1",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(root)},
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "lab: the lab needs root (network namespaces, mounts, a system user per host)"
    )
    assert not Path("/tmp/fwlab-nobody").exists()
