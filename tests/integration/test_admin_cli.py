"""The admin command line against a real collector process over HTTP: the whole host, output
cut short by a real pipe, tokens from the environment, empty results; the real agent's log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import CollectorProcess, free_port, make_report

BIN = Path(sys.executable).parent
HOST = "web-01.parks.example.org"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A collector on SQLite holding one host's report, as captured on Debian 12."""
    tmp = tmp_path_factory.mktemp("admin-cli")
    process = CollectorProcess(tmp, f"sqlite:///{tmp / 'fleetwatch.db'}").start()
    try:
        token = requests.post(
            process.url + "/api/v1/enroll",
            json={"host_id": HOST, "enroll_secret": process.enroll_secret},
            timeout=10,
        ).json()["token"]
        stored = requests.post(
            process.url + "/api/v1/report",
            json=make_report(HOST, 1),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert stored.status_code == 200, stored.text
        yield process
    finally:
        process.stop()


def admin_env(collector: CollectorProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update({"FLEETWATCH_API_URL": collector.url, "FLEETWATCH_API_TOKEN": collector.admin_token})
    return env


def fleetwatch(collector: CollectorProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fleetwatch"), *argv],
        env=admin_env(collector),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestHost:
    def test_the_page_shows_system_updates_and_ports(self, collector: CollectorProcess) -> None:
        """`fleetwatch host NAME` shows the OS, kernel, reboot line, updates and ports."""
        done = fleetwatch(collector, "host", HOST)
        assert done.returncode == 0, done.stderr
        assert "os:            Debian GNU/Linux 12 (bookworm)" in done.stdout
        assert "kernel:        6.18.44-fc-v857" in done.stdout
        assert "reboot needed: no" in done.stdout
        assert "openssl " in done.stdout
        assert "libssl-dev, libssl3, openssl" in done.stdout
        assert "tcp/5432" in done.stdout
        assert "memory: 2.5% used of 23.5 GiB" in done.stdout  # resources, kept inline

    def test_json_stays_complete(self, collector: CollectorProcess) -> None:
        """--json holds every section's data, the package list included."""
        done = fleetwatch(collector, "host", HOST, "--json")
        host = json.loads(done.stdout)
        assert set(host["sections"]) >= {"system", "packages", "updates", "ports", "services"}
        assert len(host["sections"]["packages"]["data"]["packages"]) > 100

    def test_output_piped_into_head_ends_quietly(self, collector: CollectorProcess) -> None:
        """`fleetwatch host NAME --json | head -1`: one line, nothing on stderr."""
        done = subprocess.run(  # a real pipe, closed by head after its first line
            f"'{BIN / 'fleetwatch'}' host '{HOST}' --json | head -1",
            shell=True,
            env=admin_env(collector),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout == "{\n"
        assert done.stderr == ""


class TestTokens:
    def test_tokens_from_the_environment_are_listed_without_values(
        self, collector: CollectorProcess
    ) -> None:
        """The collector's admin token and enrollment secret show as "from environment"."""
        done = fleetwatch(collector, "token", "list")
        assert done.returncode == 0, done.stderr
        lines = {line.split()[1]: line for line in done.stdout.splitlines()[1:]}
        assert lines["FLEETWATCH_ADMIN_TOKEN"].endswith("from environment")
        assert lines["FLEETWATCH_ENROLL_SECRET"].endswith("from environment")
        listed = fleetwatch(collector, "token", "list", "--json").stdout
        for secret in (collector.admin_token, collector.enroll_secret):
            assert secret not in done.stdout
            assert secret not in listed
        assert {t["source"] for t in json.loads(listed)} == {"environment"}


class TestEmptyResults:
    def test_findings_filter_without_match(self, collector: CollectorProcess) -> None:
        """A filter that matches nothing says so, naming the filter."""
        done = fleetwatch(collector, "findings", "--rule", "no_such_rule")
        assert done.stdout.strip() == "no findings match --rule no_such_rule"

    def test_hosts_filter_without_match(self, collector: CollectorProcess) -> None:
        done = fleetwatch(collector, "hosts", "--unit", "nobody")
        assert done.stdout.strip() == "no hosts match --unit nobody"

    def test_reports_of_a_host_without_any(self, collector: CollectorProcess) -> None:
        """`fleetwatch reports` of a host enrolled but silent says it has none yet."""
        enrolled = requests.post(
            collector.url + "/api/v1/enroll",
            json={"host_id": "quiet-01", "enroll_secret": collector.enroll_secret},
            timeout=10,
        )
        assert enrolled.status_code == 200
        done = fleetwatch(collector, "reports", "quiet-01")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "no reports from quiet-01 yet"


def test_the_agent_log_shows_no_internal_fields(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    """The real agent's "report delivered" line carries the sequence and status only."""
    done = subprocess.run(
        [str(BIN / "fleetwatch-agent"), "run", "--once"],
        env={
            **collector.agent_env(tmp_path / "agent", "agent-log-01"),
            "FLEETWATCH_LOG_FORMAT": "console",
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    delivered = [line for line in output.splitlines() if "report delivered" in line]
    assert delivered, output[-2000:]
    assert "hash_only" not in output
    assert "missing=" not in output


class TestDemo:
    def test_a_taken_port_is_named(self, tmp_path: Path) -> None:
        """`fleetwatch demo --port P` with P taken says so and how to choose another."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            done = subprocess.run(
                [str(BIN / "fleetwatch"), "demo", "--dir", str(tmp_path), "--port", str(port)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert done.returncode == 1
        assert f"port {port} on 127.0.0.1 is taken" in done.stderr
        assert "--port" in done.stderr

    @pytest.mark.slow
    def test_keep_prints_three_next_steps_on_the_given_port(self, tmp_path: Path) -> None:
        """With --keep, the demo names `fleetwatch findings`, the API docs and the dashboard,
        all on the port it was given, and the docs URL answers; Ctrl-C stops it."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
        demo = subprocess.Popen(
            [
                str(BIN / "fleetwatch"),
                "demo",
                "--dir",
                str(tmp_path),
                "--port",
                str(port),
                "--keep",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            assert demo.stdout is not None
            lines: list[str] = []
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                line = demo.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "the dashboard:" in line:
                    break
            text = "".join(lines)
            assert f"1. {BIN / 'fleetwatch'} findings" in text, text
            assert f"2. the API and its docs:  http://127.0.0.1:{port}/docs" in text
            assert f"3. the dashboard:         http://127.0.0.1:{port}/" in text
            assert requests.get(f"http://127.0.0.1:{port}/docs", timeout=10).status_code == 200
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
