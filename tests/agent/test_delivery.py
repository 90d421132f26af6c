"""Retries, Retry-After, and the agent's refusals: insecure URLs and secrets others can read."""

from __future__ import annotations

import random
import subprocess
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from fleetwatch.agent.client import CollectorClient, InsecureURLError, parse_retry_after
from fleetwatch.agent.cycle import backoff_delay
from fleetwatch.agent.secret_files import check_secret_files
from fleetwatch.agent.settings import AgentSettings, SettingsError
from tests.helpers import BIN


def run_agent(state_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real fleetwatch-agent command, with only a collector URL and a state directory."""
    return subprocess.run(
        [str(BIN / "fleetwatch-agent"), *args],
        env={
            "FLEETWATCH_COLLECTOR_URL": url,
            "FLEETWATCH_STATE_DIR": str(state_dir),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class TestBackoff:
    def test_full_jitter_under_a_growing_ceiling(self) -> None:
        rng = random.Random(7)
        for attempt in range(1, 12):
            delays = [backoff_delay(attempt, 300, rng=rng) for _ in range(200)]
            ceiling = min(300, 2**attempt)
            assert all(0 <= d <= ceiling for d in delays)
            assert max(delays) > ceiling * 0.8  # spread over the whole range, not bunched
            assert min(delays) < ceiling * 0.2

    def test_capped(self) -> None:
        rng = random.Random(1)
        assert all(backoff_delay(40, 60, rng=rng) <= 60 for _ in range(100))

    def test_never_sooner_than_retry_after(self) -> None:
        rng = random.Random(3)
        assert all(backoff_delay(1, 300, retry_after=30, rng=rng) >= 30 for _ in range(100))
        # but a Retry-After beyond the cap waits the cap
        assert backoff_delay(1, 60, retry_after=3600, rng=rng) == 60


class TestRetryAfter:
    def test_seconds_and_dates(self) -> None:
        now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
        assert parse_retry_after("120") == 120
        assert (
            parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
        )
        assert (
            parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
        )
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None


class TestInsecureURL:
    @pytest.mark.parametrize("url", ["http://10.0.0.5:8470", "http://fleetwatch.example:8470"])
    def test_plain_http_to_another_host_is_refused(self, url: str) -> None:
        with pytest.raises(InsecureURLError, match="refusing plain HTTP"):
            CollectorClient(url)

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8470",
            "http://[::1]:8470",
            "http://localhost:8470",
            "https://10.0.0.5:8470",
        ],
    )
    def test_loopback_and_https_are_fine(self, url: str) -> None:
        CollectorClient(url)

    def test_allowed_when_asked(self) -> None:
        CollectorClient("http://10.0.0.5:8470", allow_insecure_http=True)

    def test_the_command_refuses_with_exit_status_2(self, tmp_path: Path) -> None:
        done = run_agent(tmp_path, "http://192.0.2.10:8470", "run", "--once")
        assert done.returncode == 2
        assert "refusing plain HTTP to http://192.0.2.10:8470" in done.stderr


class TestSecretFiles:
    def test_token_readable_by_others(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("fwh_x\n")
        (tmp_path / "token").chmod(0o640)
        with pytest.raises(SettingsError, match=rf"{tmp_path}/token .*mode 0640.*chmod 600"):
            check_secret_files(AgentSettings(state_dir=tmp_path), None)
        (tmp_path / "token").chmod(0o600)
        check_secret_files(AgentSettings(state_dir=tmp_path), None)

    def test_world_readable_secret_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "enroll-secret"
        secret.write_text("s\n")
        secret.chmod(0o644)
        settings = AgentSettings(state_dir=tmp_path, enroll_secret_file=secret)
        with pytest.raises(SettingsError, match="chmod 640"):
            check_secret_files(settings, None)
        secret.chmod(0o640)  # shared with the agent's group, as the deploy does
        check_secret_files(settings, None)

    def test_config_holding_the_secret(self, tmp_path: Path) -> None:
        config = tmp_path / "agent.toml"
        config.write_text('enroll_secret = "s"\n')
        config.chmod(0o644)
        with pytest.raises(SettingsError, match=r"agent\.toml holds a secret"):
            check_secret_files(AgentSettings(state_dir=tmp_path), config)
        config.write_text("interval = 60\n")  # no secret in it: any mode will do
        check_secret_files(AgentSettings(state_dir=tmp_path), config)

    def test_the_command_refuses_to_start(self, tmp_path: Path) -> None:
        (tmp_path / "token").write_text("fwh_x\n")
        (tmp_path / "token").chmod(0o644)
        done = run_agent(tmp_path, "http://127.0.0.1:9", "run")
        assert done.returncode == 2
        assert "refusing to start" in done.stderr
        assert f"chmod 600 {tmp_path}/token" in done.stderr
