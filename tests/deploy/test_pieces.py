"""The pieces the deploys assemble: agent settings, the systemd unit, wheel targets."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import DeployError

from fleetwatch.agent.settings import load_settings
from fleetwatch.deploy.deploys.agent import AGENT_DEFAULTS, agent_config, agent_deb
from fleetwatch.deploy.deploys.service import unit_text
from fleetwatch.deploy.wheels import Target


def agent_data(**data: object) -> SimpleNamespace:
    """Host data as the deploy sees it: the deploy's defaults under the given keys."""
    return SimpleNamespace(
        **{
            **AGENT_DEFAULTS,
            "fleetwatch_collector_url": "https://fw.example:8470",
            "fleetwatch_enroll_secret": "s",
            **data,
        }
    )


class TestAgentConfig:
    def test_written_settings_load_in_the_agent(self, tmp_path: Path) -> None:
        """What the deploy writes is what the agent reads: host id, URL, checks and all."""
        data = agent_data(
            fleetwatch_ca_cert="PEM",
            fleetwatch_checks=[
                {
                    "name": "site",
                    "type": "http",
                    "url": "http://127.0.0.1/",
                    "expect_status": [200, 204],
                }
            ],
        )
        path = tmp_path / "agent.toml"
        path.write_text(agent_config(data, "web-01.parks"))
        settings = load_settings(path)
        assert settings.resolved_host_id == "web-01.parks"
        assert settings.collector_url == "https://fw.example:8470"
        assert settings.enroll_secret_file == Path("/etc/fleetwatch/enroll-secret")
        assert settings.ca_bundle == Path("/etc/fleetwatch/collector-ca.pem")
        assert settings.active_checks[0].name == "site"
        assert "s" not in path.read_text().split("\n")[1:]  # the secret stays in its own file

    def test_unset_settings_are_left_out(self) -> None:
        """Without a CA or checks the file names neither; the agent takes its defaults."""
        text = agent_config(agent_data(), "web-01.parks")
        settings = tomllib.loads(text)
        assert "ca_bundle" not in settings
        assert "checks" not in settings
        assert settings["allow_insecure_http"] is False

    def test_checks_and_strings_come_back_intact(self) -> None:
        """Checks are read back as written, quotes, backslashes and non-ASCII included."""
        check = {"name": 'quote " and \\ and ünïcode', "type": "tcp", "port": 22, "timeout": 2.5}
        text = agent_config(agent_data(fleetwatch_checks=[check]), "web-01.parks")
        assert tomllib.loads(text)["checks"] == [check]


class TestUnit:
    def unit(self, command: list[str]) -> str:
        return unit_text(
            description="fleetwatch agent",
            user="fleetwatch",
            command=command,
            writable=["/var/lib/fleetwatch-agent"],
            capabilities=["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"],
            nice=10,
        )

    def test_sandboxing(self) -> None:
        text = self.unit(["/opt/fleetwatch/agent/bin/fleetwatch-agent", "run"])
        for directive in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/fleetwatch-agent",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "User=fleetwatch",
            "AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
            "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
        ):
            assert directive in text.splitlines()

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
    def test_systemd_accepts_the_unit(self, tmp_path: Path) -> None:
        """systemd's own checker finds nothing wrong with the unit (no systemd needs to run)."""
        unit = tmp_path / "fleetwatch-agent.service"
        unit.write_text(self.unit(["/bin/true"]))
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        problems = [line for line in done.stderr.splitlines() if "fleetwatch-agent.service" in line]
        assert problems == [], done.stderr

    def test_the_collector_unit_raises_its_descriptor_limit(self, tmp_path: Path) -> None:
        """The collector's unit sets LimitNOFILE (every connection is a descriptor); the
        agent's sets none, and systemd accepts both."""
        collector = unit_text(
            description="fleetwatch collector",
            user="fleetwatch-collector",
            command=["/bin/true"],
            writable=["/var/lib/fleetwatch"],
            capabilities=[],
            open_files=65536,
        )
        assert "LimitNOFILE=65536" in collector.splitlines()
        assert "LimitNOFILE" not in self.unit(["/bin/true"])
        if shutil.which("systemd-analyze"):
            unit = tmp_path / "fleetwatch-collector.service"
            unit.write_text(collector)
            done = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", str(unit)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert [x for x in done.stderr.splitlines() if "fleetwatch-collector" in x] == []


class TestTarget:
    def test_manylinux_tags_follow_the_hosts_glibc(self) -> None:
        tags = Target("3.11", "x86_64", "2.36").platforms()
        assert tags[0] == "manylinux_2_36_x86_64"
        assert "manylinux_2_17_x86_64" in tags
        assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
        old = Target("3.11", "aarch64", "2.12").platforms()
        assert "manylinux_2_17_aarch64" not in old
        assert "manylinux2010_aarch64" in old


def test_agent_deb_is_the_newest_built_package_by_debian_version_order(tmp_path: Path) -> None:
    """Without fleetwatch_agent_deb the deploy takes the newest .deb in dist/, as dpkg orders
    versions (revision 10 after 9, a release after its ~rc), not as names sort."""
    for version in ("0.1.0-9", "0.1.0-10", "0.2.0~rc1-1", "0.2.0-1", "0.1.5-3"):
        (tmp_path / f"fleetwatch-agent_{version}_amd64.deb").write_bytes(b"")
    (tmp_path / "fleetwatch-collector_0.9.0-1_amd64.deb").write_bytes(b"")
    assert agent_deb(agent_data(), tmp_path).name == "fleetwatch-agent_0.2.0-1_amd64.deb"
    (tmp_path / "fleetwatch-agent_0.2.0-1_amd64.deb").unlink()
    assert agent_deb(agent_data(), tmp_path).name == "fleetwatch-agent_0.2.0~rc1-1_amd64.deb"


def test_agent_deb_names_what_is_missing(tmp_path: Path) -> None:
    """No built package, or a named one that is not there: one line saying what to do."""
    with pytest.raises(DeployError, match=r"run ./scripts/build-deb agent"):
        agent_deb(agent_data(), tmp_path)
    missing = tmp_path / "fleetwatch-agent_0.1.0-1_amd64.deb"
    with pytest.raises(DeployError, match=f"fleetwatch_agent_deb: no such file {missing}"):
        agent_deb(agent_data(fleetwatch_agent_deb=str(missing)), tmp_path)
    missing.write_bytes(b"")
    assert agent_deb(agent_data(fleetwatch_agent_deb=str(missing)), None) == missing
