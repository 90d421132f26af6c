"""Agent settings: a TOML file with environment variables on top; bad values named clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetwatch.agent.collectors.checks import HttpCheck, TcpCheck
from fleetwatch.agent.settings import AgentSettings, SettingsError, load_settings
from tests.helpers import BIN

CONFIG = """
collector_url = "https://fleetwatch.example:8470/"
host_id = "web-01"
interval = 120
state_dir = "/var/lib/fw"

[[checks]]
name = "ssh"
type = "tcp"
port = 22

[[checks]]
name = "site"
type = "http"
url = "http://127.0.0.1/healthz"
timeout = 2
"""


class TestLoadSettings:
    def test_file_values(self, tmp_path: Path) -> None:
        """Every key of the TOML file is read, active checks included."""
        path = tmp_path / "agent.toml"
        path.write_text(CONFIG)
        settings = load_settings(path)
        assert settings.collector_url == "https://fleetwatch.example:8470"
        assert settings.resolved_host_id == "web-01"
        assert settings.interval == 120
        assert settings.state_dir == Path("/var/lib/fw")
        checks = settings.active_checks
        assert isinstance(checks[0], TcpCheck)
        assert checks[0].port == 22
        assert isinstance(checks[1], HttpCheck)
        assert checks[1].timeout == 2

    def test_environment_overrides_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """FLEETWATCH_* variables win over the file."""
        path = tmp_path / "agent.toml"
        path.write_text(CONFIG)
        monkeypatch.setenv("FLEETWATCH_INTERVAL", "30")
        monkeypatch.setenv(
            "FLEETWATCH_CHECKS", '[{"type": "process", "name": "p", "process": "sshd"}]'
        )
        settings = load_settings(path)
        assert settings.interval == 30
        assert [c.name for c in settings.active_checks] == ["p"]

    def test_host_id_defaults_to_the_hostname(self) -> None:
        import socket

        assert AgentSettings().resolved_host_id == socket.gethostname()

    def test_bad_environment_value_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FLEETWATCH_INTERVAL", "soon")
        with pytest.raises(
            SettingsError, match=r"^invalid setting interval \(FLEETWATCH_INTERVAL\)"
        ):
            load_settings(None)

    def test_bad_file_value_names_the_key_and_file(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_text('collector_url = "ftp://x"\n')
        with pytest.raises(
            SettingsError, match=rf"invalid setting collector_url \(collector_url in {path}\)"
        ):
            load_settings(path)

    def test_bad_check_names_its_position(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_text('[[checks]]\nname = "x"\ntype = "tcp"\nport = 70000\n')
        with pytest.raises(SettingsError, match=r"checks\.0\.tcp\.port"):
            load_settings(path)

    def test_unknown_key_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_text("intervall = 5\n")
        with pytest.raises(SettingsError, match="unknown setting 'intervall'"):
            load_settings(path)

    def test_missing_file_and_broken_toml(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match="cannot read config file"):
            load_settings(tmp_path / "absent.toml")
        broken = tmp_path / "broken.toml"
        broken.write_text("interval = = 3")
        with pytest.raises(SettingsError, match="not valid TOML"):
            load_settings(broken)


class TestCommandLine:
    def test_bad_value_is_one_line_and_exit_status_2(self, tmp_path: Path) -> None:
        """The real command prints one line naming the setting and exits with status 2."""
        done = subprocess.run(
            [str(BIN / "fleetwatch-agent"), "collect"],
            env={"FLEETWATCH_INTERVAL": "-5", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(
            "fleetwatch-agent: invalid setting interval (FLEETWATCH_INTERVAL)"
        )

    def test_run_needs_a_collector_url(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [str(BIN / "fleetwatch-agent"), "run", "--once"],
            env={"FLEETWATCH_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2
        assert "collector_url is not set" in done.stderr

    def test_collect_prints_a_valid_report_and_sends_nothing(self, tmp_path: Path) -> None:
        """`collect` prints this host's report as JSON, with every section, and needs no URL."""
        from fleetwatch.schema import SECTION_NAMES, Report

        done = subprocess.run(
            [str(BIN / "fleetwatch-agent"), "collect"],
            env={
                "FLEETWATCH_STATE_DIR": str(tmp_path / "state"),
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        report = Report.model_validate_json(done.stdout)
        for name in SECTION_NAMES:
            section = getattr(report.sections, name)
            assert section is not None, name
            assert section.data is not None or section.error, name
        assert not (tmp_path / "state" / "spool").exists()  # nothing spooled, nothing sent
