"""The agent deploy with ``fleetwatch_agent_package = "deb"``: the real pyinfra, over SSH, puts
the agent's Debian package (built from this tree as scripts/build-deb builds it) on a lab host
whose whole filesystem is a private overlay of a debootstrapped Debian bookworm root
(tests/lab.py), so dpkg writes there and never into this machine. The agent enrolls with a real
collector (on the lab bridge) and reports; a second run changes nothing; a newer .deb upgrades
it, and it carries on reporting without enrolling again; the remove deploy purges it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.deploy import debian
from tests.debian_roots import cached_root
from tests.helpers import BIN, CollectorProcess, received, wait_until
from tests.lab import Lab

pytestmark = [pytest.mark.root, pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parent.parent.parent
# the private root's packages: scripts/debian-root builds it (.ci/run does, before the tests)
ROOT_PACKAGES = ("python3", "python3-venv", "ca-certificates", "iproute2", "procps")
HOST = "deb-01.parks"


def _machine_packages() -> str:
    """This machine's dpkg database, as ``dpkg -l`` shows it."""
    return subprocess.run(["dpkg", "-l"], capture_output=True, text=True, check=True).stdout


def _write_inventory(path: Path, lab: Lab, collector: CollectorProcess, deb: Path) -> Path:
    data = {
        "ssh_hostname": lab.host(HOST).address,
        **lab.inventory_data(),
        "fleetwatch_collector_url": collector.url,
        "fleetwatch_enroll_secret": collector.enroll_secret,
        # plain HTTP on the lab bridge: the test collector has no certificate
        "fleetwatch_allow_insecure_http": True,
        "fleetwatch_interval": 2,
        "fleetwatch_agent_package": "deb",
        "fleetwatch_agent_deb": str(deb),
    }
    path.write_text(f"agents = [({HOST!r}, {data!r})]\n")
    return path


def _pyinfra(inventory: Path, recipe: str = "install_agent") -> dict[str, int]:
    """Run the real pyinfra with one of the agent's recipes; its grand total of operations."""
    done = subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(inventory), f"deploy/recipes/{recipe}.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total is not None, output[-3000:]
    counts = [0 if v == "-" else int(v) for v in total.groups()]
    return dict(zip(("operations", "changed", "errors", "unchanged"), counts, strict=True))


def test_deploy_installs_the_agent_deb_on_a_private_root_reports_and_upgrades(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """pyinfra installs the agent .deb over SSH; it reports; a rerun is a no-op; a newer .deb
    upgrades it; removing purges it; this machine's dpkg database stays as it was."""
    root = cached_root("bookworm", *ROOT_PACKAGES, "openssh-server")
    if shutil.which("dpkg-deb") is None:
        pytest.skip("building Debian packages needs dpkg-deb")
    machine_before = _machine_packages()
    debs = {
        revision: debian.build(debian.PACKAGES["agent"](), REPO, tmp_path / "debs", revision)
        for revision in (1, 2)
    }
    lab = make_lab([HOST], root=root)
    # the lab host reaches this machine at the bridge's address
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'fleetwatch.db'}")
    collector.args[collector.args.index("--host") + 1] = lab.gateway
    collector.url = f"http://{lab.gateway}:{collector.port}"
    collector.start()
    try:
        inventory = _write_inventory(tmp_path / "inventory.py", lab, collector, debs[1])
        first = _pyinfra(inventory)
        assert first["errors"] == 0
        assert first["changed"] > 0

        def version() -> str:
            return lab.ssh(HOST, "dpkg-query -W -f '${Version}' fleetwatch-agent").strip()

        assert version().endswith("-1")
        # the package's own boot script runs it (no systemd in the lab), as its user
        assert "fleetwatch-agent is running" in lab.ssh(HOST, "/etc/init.d/fleetwatch-agent status")
        agents = [
            line.split(None, 1)
            for line in lab.ssh(HOST, "ps -e -o user:32=,args=").splitlines()
            if "bin/fleetwatch-agent --config" in line and "supervise" not in line
        ]
        assert [user for user, _ in agents] == ["fleetwatch"], agents

        def reports() -> list[Any]:
            # one entry per delivered sequence (a row stands for the quiet reports after it)
            return received(collector.api(f"/api/v1/hosts/{HOST}/reports"))

        first_reports = wait_until(f"a report from {HOST}", reports, timeout=120)
        token = lab.ssh(HOST, "ls /var/lib/fleetwatch-agent")

        again = _pyinfra(inventory)
        assert again["errors"] == 0
        assert again["changed"] == 0, again

        upgrade = _pyinfra(_write_inventory(inventory, lab, collector, debs[2]))
        assert upgrade["changed"] > 0
        assert version().endswith("-2")
        assert lab.ssh(HOST, "ls /var/lib/fleetwatch-agent") == token
        newest = max(r["sequence"] for r in first_reports)
        wait_until(
            "a report after the upgrade",
            lambda: [r for r in reports() if r["sequence"] > newest + 2],
            timeout=120,
        )
        hosts = collector.api("/api/v1/hosts")
        assert [h["host_id"] for h in hosts] == [HOST]
        # the upload directory keeps the installed package only
        assert lab.ssh(HOST, "ls /var/cache/fleetwatch-agent").split() == [debs[2].name]

        removed = _pyinfra(inventory, "remove_agent")
        assert removed["errors"] == 0
        assert removed["changed"] > 0
        assert "fleetwatch-agent" not in lab.ssh(HOST, "dpkg -l")
        assert "fleetwatch" not in lab.ssh(HOST, "ps -e -o args=")
        paths = (
            "/opt/fleetwatch /etc/fleetwatch /var/lib/fleetwatch-agent /var/log/fleetwatch-agent "
            "/var/cache/fleetwatch-agent /etc/init.d/fleetwatch-agent"
        )
        left = lab.ssh(HOST, f"ls -d {paths} 2>/dev/null; getent passwd fleetwatch", check=False)
        assert left == ""
    finally:
        collector.stop()
    assert _machine_packages() == machine_before
