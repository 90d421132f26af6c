"""The Debian packages (`fleetwatch.deploy.debian`), built from this tree with dpkg-deb and
installed, upgraded and purged with dpkg in debootstrapped Debian roots run as machines of
their own (tests/debian_roots.py): the agent on bullseye (Python 3.9, sysvinit) reports to a
real collector on loopback, survives a reboot, keeps its settings over an upgrade and leaves
nothing behind on purge; the collector on bookworm (Python 3.11) likewise."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fleetwatch.deploy import debian
from tests.debian_roots import Machine, cached_root, private_root
from tests.helpers import CollectorProcess, free_port, wait_until

# Building a package downloads its wheels once (cached), installing one makes a virtualenv.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

BASE = ("python3", "python3-venv", "ca-certificates", "iproute2", "procps")
HOST = "bullseye-from-deb"
REPO = Path(__file__).resolve().parent.parent.parent


def _packages(name: str, out: Path) -> dict[int, Path]:
    """The package at Debian revisions 1 and 2, built as scripts/build-deb builds them."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("building Debian packages needs dpkg-deb")
    return {
        revision: debian.build(debian.PACKAGES[name](), REPO, out, revision=revision)
        for revision in (1, 2)
    }


@pytest.fixture
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    """A powered-on machine on a private overlay of the cached root the test names."""
    suite, *extra = request.param
    root = cached_root(suite, *BASE, *extra)
    with private_root(root, tmp_path / "machine") as merged:
        # The cached root forbids services to start (policy-rc.d); a real host does not.
        (merged / "usr/sbin/policy-rc.d").unlink()
        box = Machine(merged)
        box.boot()
        try:
            yield box
        finally:
            box.power_off()


def _install(machine: Machine, deb: Path, *options: str) -> str:
    shutil.copy(deb, machine.root / "tmp" / deb.name)
    done = machine.run("dpkg", *options, "-i", f"/tmp/{deb.name}")
    return done.stdout + done.stderr


def _fleetwatch_processes(machine: Machine) -> list[str]:
    return [p for p in machine.processes() if "fleetwatch" in p]


def _left_behind(machine: Machine, package: debian.Package) -> list[str]:
    """What a purge should have removed and did not: files, directories, links, accounts."""
    root = machine.root
    paths = [
        package.venv,
        debian.PREFIX,
        package.config_dir,
        package.state_dir,
        package.log_dir,
        package.wheelhouse,
        package.service.path,
        f"/etc/logrotate.d/{package.name}",
        f"/lib/systemd/system/{package.name}.service",
        *(f"/usr/bin/{command}" for command in package.commands),
    ]
    left = [p for p in paths if (root / p.lstrip("/")).exists()]
    left += [str(p) for p in (root / "etc").glob(f"rc?.d/*{package.name}")]
    for database in ("passwd", "group"):
        if machine.run("getent", database, package.user, check=False).returncode == 0:
            left.append(f"{database} entry {package.user}")
    return left


@pytest.mark.parametrize("machine", [("bullseye", "sysvinit-core")], indirect=True)
def test_agent_package_on_bullseye_installs_reports_reboots_upgrades_and_purges(
    machine: Machine, tmp_path: Path
) -> None:
    """The agent .deb on Debian 11 (Python 3.9, sysvinit): report, reboot, upgrade, purge."""
    package = debian.PACKAGES["agent"]()
    packages = _packages("agent", tmp_path / "debs")
    collector = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'fleetwatch.db'}").start()
    try:
        output = _install(machine, packages[1])
        assert "fleetwatch-agent not started: set collector_url in /etc/fleetwatch/agent.toml" in (
            output
        )
        python = machine.run("/opt/fleetwatch/agent/bin/python", "--version").stdout
        assert python.startswith("Python 3.9.")
        assert _fleetwatch_processes(machine) == []

        (machine.root / "etc/fleetwatch/enroll-secret").write_text(collector.enroll_secret)
        machine.run("chown", "root:fleetwatch", "/etc/fleetwatch/enroll-secret")
        machine.run("chmod", "640", "/etc/fleetwatch/enroll-secret")
        config = machine.root / "etc/fleetwatch/agent.toml"
        settings = (
            f'host_id = "{HOST}"\n'
            f'collector_url = "{collector.url}"\n'
            'enroll_secret_file = "/etc/fleetwatch/enroll-secret"\n'
        )
        config.write_text(config.read_text() + settings)
        machine.run("/etc/init.d/fleetwatch-agent", "start")

        def reports() -> list[int]:
            return [r["sequence"] for r in collector.api(f"/api/v1/hosts/{HOST}/reports")]

        log = machine.root / "var/log/fleetwatch-agent/agent.log"

        def stored() -> int:
            """Reports the collector answered "stored" to, by the agent's log (kept over reboots)."""
            lines = log.read_text().splitlines()
            return sum('"report delivered"' in line and '"stored"' in line for line in lines)

        wait_until("the first report from the packaged agent", lambda: reports() == [1])
        running = _fleetwatch_processes(machine)
        assert any("fleetwatch.supervise" in p for p in running), running
        assert any("fleetwatch-agent --config /etc/fleetwatch/agent.toml run" in p for p in running)

        # Power loss, then the boot scripts: the agent comes back by itself and reports again.
        machine.power_off()
        assert list((machine.root / "etc/rc2.d").glob("S*fleetwatch-agent"))
        boot = machine.boot()
        try:
            wait_until("the agent started at boot", lambda: _fleetwatch_processes(machine))
        except AssertionError as exc:
            detail = f"{boot.stdout}{boot.stderr}\n{log.read_text()[-2000:]}"
            raise AssertionError(f"{exc}\n{detail}") from None
        try:
            wait_until("a report after the reboot", lambda: stored() >= 2, timeout=180)
        except AssertionError as exc:
            detail = f"{log.read_text()[-3000:]}\n{collector.log.read_text()[-2000:]}"
            raise AssertionError(f"{exc}\n{detail}") from None
        assert machine.run("/etc/init.d/fleetwatch-agent", "status").returncode == 0

        # An upgrade keeps the settings (a conffile changed here), restarts the agent, which
        # reports with the host token it already has.
        edited = config.read_text()
        before = stored()
        output = _install(machine, packages[2])
        assert config.read_text() == edited
        assert "0.1.0-2" in machine.run("dpkg-query", "-W", "fleetwatch-agent").stdout
        wait_until("a report after the upgrade", lambda: stored() > before, timeout=180)
        assert collector.api(f"/api/v1/hosts/{HOST}")["host_id"] == HOST

        machine.run("dpkg", "--purge", "fleetwatch-agent")
        assert _fleetwatch_processes(machine) == []
        assert _left_behind(machine, package) == []
    finally:
        collector.stop()


@pytest.mark.parametrize("machine", [("bookworm",)], indirect=True)
def test_collector_package_on_bookworm_installs_upgrades_and_purges(
    machine: Machine, tmp_path: Path
) -> None:
    """The collector .deb on Debian 12: serves once installed, keeps data and settings over an
    upgrade, and purges clean."""
    package = debian.PACKAGES["collector"]()
    packages = _packages("collector", tmp_path / "debs")
    port = free_port()
    # Settings put in place before the install, as a deploy would: dpkg keeps them.
    env_file = machine.root / "etc/fleetwatch-collector/collector.env"
    env_file.parent.mkdir(parents=True)
    token = "fwa_" + "b" * 40
    env_file.write_text(
        debian.COLLECTOR_CONFIG.replace("FLEETWATCH_PORT=8470", f"FLEETWATCH_PORT={port}")
        + f"FLEETWATCH_ADMIN_TOKEN={token}\n"
    )
    url = f"http://127.0.0.1:{port}"

    def hosts() -> list[object]:
        response = requests.get(
            f"{url}/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        response.raise_for_status()
        return list(response.json())

    output = _install(machine, packages[1], "--force-confold")
    # This root has no init system (neither systemd nor sysvinit), so invoke-rc.d starts
    # nothing, as on a container; the package's own init script does.
    machine.run("/etc/init.d/fleetwatch-collector", "start")
    log = machine.root / "var/log/fleetwatch-collector/collector.log"
    try:
        wait_until("the packaged collector to answer", lambda: hosts() == [1] or [1], timeout=90)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{output}\n{log.read_text()[-3000:] if log.exists() else ''}"
        ) from None
    assert hosts() == []
    assert (machine.root / "var/lib/fleetwatch/fleetwatch.db").exists()
    cli = machine.run("fleetwatch", "--version").stdout
    assert cli.startswith("fleetwatch ")

    _install(machine, packages[2], "--force-confold")
    assert f"FLEETWATCH_PORT={port}" in env_file.read_text()
    machine.run("/etc/init.d/fleetwatch-collector", "start")
    wait_until("the upgraded collector to answer", lambda: hosts() == [1] or [1], timeout=90)
    assert hosts() == []
    assert "0.1.0-2" in machine.run("dpkg-query", "-W", "fleetwatch-collector").stdout

    machine.run("dpkg", "--purge", "fleetwatch-collector")
    assert _fleetwatch_processes(machine) == []
    assert _left_behind(machine, package) == []
