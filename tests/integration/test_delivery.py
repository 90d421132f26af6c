"""Nothing lost: the agent's spool, with real collector and agent processes."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.schema import Report
from tests.helpers import AgentProcess, CollectorProcess, make_report, received, wait_until

HOST = "spool-test-host"


@pytest.fixture
def collector(tmp_path: Path, database_url: str) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path, database_url).start()
    yield process
    process.stop()


def stored(collector: CollectorProcess, host: str = HOST) -> list[dict[str, Any]]:
    """Reports received from a host, one per sequence, oldest first."""
    return received(collector.api(f"/api/v1/hosts/{host}/reports", limit=5000))


def delivered_everything(collector: CollectorProcess, agent: AgentProcess) -> bool:
    reports = stored(collector)
    return (
        bool(reports)
        and agent.spooled() == 0
        and (reports[-1]["sequence"] == agent.last_sequence())
    )


def test_collector_away_for_several_intervals(collector: CollectorProcess, tmp_path: Path) -> None:
    """Every report made while the collector was stopped arrives, in order, none twice."""
    agent = AgentProcess(collector, tmp_path / "agent", HOST, tmp_path / "agent.log").start()
    try:
        wait_until("two reports", lambda: len(stored(collector)) >= 2)
        collector.stop()
        before = agent.last_sequence()
        wait_until(
            "five more reports, spooled", lambda: agent.last_sequence() >= before + 5, timeout=30
        )
        assert agent.spooled() >= 4
        collector.start()
        wait_until("the spool to drain", lambda: delivered_everything(collector, agent))
    finally:
        assert agent.stop() == 0
    sequences = [r["sequence"] for r in stored(collector)]
    assert sequences == list(range(1, len(sequences) + 1))  # all of them, in order, once each
    assert len(sequences) >= 7


def test_a_full_spool_drops_the_oldest_and_says_how_many(
    collector: CollectorProcess,
    tmp_path: Path,
) -> None:
    agent = AgentProcess(
        collector, tmp_path / "agent", HOST, tmp_path / "agent.log", spool_max_reports="2"
    ).start()
    try:
        wait_until("a first report", lambda: len(stored(collector)) >= 1)
        collector.stop()
        before = agent.last_sequence()
        wait_until("six more reports", lambda: agent.last_sequence() >= before + 6, timeout=30)
        assert agent.spooled() == 2
        collector.start()
        wait_until("the spool to drain", lambda: delivered_everything(collector, agent))
    finally:
        agent.stop()
    reports = stored(collector)
    dropped = sum(r["dropped"] for r in reports)
    sequences = {r["sequence"] for r in reports}
    assert dropped >= 4
    assert dropped == agent.last_sequence() - len(sequences)  # every loss is counted
    host = collector.api(f"/api/v1/hosts/{HOST}")
    assert host["dropped_reports"] == dropped


def test_a_report_the_collector_refuses_is_set_aside_and_counted(
    collector: CollectorProcess,
    tmp_path: Path,
) -> None:
    """A spooled report that can never be delivered does not block the ones behind it."""
    state = tmp_path / "agent"
    agent = AgentProcess(collector, state, HOST, tmp_path / "agent.log")
    once = [*agent.argv[:-1], "run", "--once"]
    import subprocess

    assert subprocess.run(once, env=agent.env, check=False, capture_output=True).returncode == 0
    foreign = Report.model_validate(make_report("someone-else", 99)).model_dump_json()
    (state / "spool" / f"{99:020d}.json.gz").write_bytes(gzip.compress(foreign.encode()))
    (state / "spool" / f"{99:020d}.json.gz").chmod(0o600)
    assert subprocess.run(once, env=agent.env, check=False, capture_output=True).returncode == 0
    assert (state / "spool" / "corrupt" / f"{99:020d}.json.gz").exists()
    assert subprocess.run(once, env=agent.env, check=False, capture_output=True).returncode == 0
    reports = stored(collector)
    assert [r["sequence"] for r in reports] == [1, 2, 3]
    assert reports[-1]["dropped"] == 1


@pytest.mark.root
@pytest.mark.parametrize(
    ("options", "error"), [("size=4k", "No space left on device"), ("ro", "Read-only file system")]
)
def test_a_full_or_read_only_spool_keeps_the_agent_running(
    collector: CollectorProcess,
    tmp_path: Path,
    options: str,
    error: str,
) -> None:
    """The agent keeps running, logs why, and tells the collector in its reports."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a spool of its own")
    state = tmp_path / "agent"
    (state / "spool").mkdir(parents=True, mode=0o700)
    agent = AgentProcess(collector, state, HOST, tmp_path / "agent.log")
    spool = state / "spool"
    # the agent in a mount namespace of its own, its spool a tiny or read-only filesystem
    agent.argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs -o {options},mode=700 tmpfs {spool} && exec "$@"',
        "sh",
        *agent.argv,
    ]
    agent.start()
    try:
        wait_until("three reports", lambda: len(stored(collector)) >= 3, timeout=60)
        assert agent.process is not None
        assert agent.process.poll() is None  # still running
    finally:
        assert agent.stop() == 0
    host = collector.api(f"/api/v1/hosts/{HOST}")
    assert error in (host["spool_error"] or "")
    assert all(error in (r["spool_error"] or "") for r in stored(collector)[1:])
    assert agent.events("spool write failed, keeping the report in memory")
