"""Fault tests with real processes: the collector killed again and again under load, and its
PostgreSQL server stopped and started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from fleetwatch.collector.storage.engine import normalize_url
from fleetwatch.collector.storage.hosts import INLINE_SECTIONS
from tests.helpers import AgentProcess, CollectorProcess, free_port, received, wait_until

pytestmark = pytest.mark.slow
AGENTS = ("kill-test-a", "kill-test-b", "kill-test-c")


def stored(collector: CollectorProcess, host: str) -> list[dict[str, Any]]:
    """The host's reports, one per sequence, oldest first."""
    return received(collector.api(f"/api/v1/hosts/{host}/reports", limit=5000))


def consistency_problems(database_url: str) -> list[str]:
    """What would be wrong with the database after a partial write: nothing, we expect."""
    engine = create_engine(normalize_url(database_url))
    problems = []
    with engine.connect() as conn:
        blobs = {row[0] for row in conn.execute(text("SELECT hash FROM blobs"))}
        for host_id, sequence, raw in conn.execute(
            text("SELECT host_id, sequence, sections FROM reports")
        ):
            sections = raw if isinstance(raw, dict) else json.loads(raw)
            # inline sections (resources) are kept on the host row, never as contents
            missing = {h for n, h in sections.items() if n not in INLINE_SECTIONS} - blobs
            if missing:
                problems.append(f"report {host_id}#{sequence} refers to missing contents")
        for host_id, last, raw in conn.execute(
            text("SELECT host_id, last_sequence, sections FROM hosts")
        ):
            sections = raw if isinstance(raw, dict) else json.loads(raw)
            if any(
                s.get("hash") and s["hash"] not in blobs and n not in INLINE_SECTIONS
                for n, s in sections.items()
            ):
                problems.append(f"host {host_id} holds missing contents")
            latest = conn.execute(
                # a row stands for the quiet reports after it, up to `through`
                text("SELECT max(coalesce(through, sequence)) FROM reports WHERE host_id = :h"),
                {"h": host_id},
            ).scalar()
            if latest != last:
                problems.append(f"host {host_id}: latest sequence {last}, newest stored {latest}")
        duplicates = conn.execute(
            text(
                "SELECT host_id, sequence, count(*) FROM reports "
                "GROUP BY host_id, instance_id, sequence HAVING count(*) > 1"
            )
        ).fetchall()
        problems += [f"report {h}#{s} stored {n} times" for h, s, n in duplicates]
    engine.dispose()
    return problems


def test_collector_killed_again_and_again(tmp_path: Path, database_url: str) -> None:
    """Several agents report while the collector is SIGKILLed and restarted several times:
    every report an agent saw acknowledged is stored exactly once, none is lost, and the
    database holds no partial report."""
    collector = CollectorProcess(
        tmp_path, database_url, extra_env={"FLEETWATCH_HOST_BURST": "1000"}
    ).start()
    agents = [
        AgentProcess(collector, tmp_path / name, name, tmp_path / f"{name}.log").start()
        for name in AGENTS
    ]
    try:
        wait_until("every agent to report", lambda: all(stored(collector, a) for a in AGENTS))
        for _ in range(5):
            time.sleep(1.5)
            collector.stop(kill=True)
            time.sleep(1.0)
            collector.start()
        wait_until(
            "every spool to drain",
            lambda: all(
                a.spooled() == 0
                and stored(collector, h)
                and stored(collector, h)[-1]["sequence"] == a.last_sequence()
                for a, h in zip(agents, AGENTS, strict=True)
            ),
            timeout=90,
        )
    finally:
        for agent in agents:
            agent.stop()
        collector.stop()
    for agent, host in zip(agents, AGENTS, strict=True):
        sequences = [r["sequence"] for r in stored_after(database_url, host)]
        assert sequences == sorted(set(sequences))  # none twice
        # none lost: stored, or still spooled (made after the last delivery before the stop)
        assert set(sequences) | agent.spooled_sequences() == set(
            range(1, agent.last_sequence() + 1)
        )
        assert agent.acknowledged() <= set(sequences)
        assert len(agent.events("delivery failed, will retry")) >= 1  # the kills were felt
    assert consistency_problems(database_url) == []


def stored_after(database_url: str, host: str) -> list[dict[str, Any]]:
    """Reports of a host as the database has them, in the order they were stored."""
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT sequence, through FROM reports WHERE host_id = :h ORDER BY id"),
            {"h": host},
        ).fetchall()
    engine.dispose()
    # a row stands for the quiet reports after it, up to `through`
    return [
        {"sequence": n}
        for sequence, through in rows
        for n in range(sequence, (through or sequence) + 1)
    ]


# -- a PostgreSQL server of the test's own, to stop and start -----------------------------


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, run as the postgres user."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if os.geteuid() != 0 or not binaries or shutil.which("setpriv") is None:
            pytest.skip("needs root and a PostgreSQL installation for a server of its own")
        self.bin = Path(binaries[-1]).parent
        self.directory = Path(tempfile.mkdtemp(prefix="fleetwatch-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.directory / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv],
            check=True,
            capture_output=True,
            timeout=120,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            "-w",
            "-l",
            str(self.directory / "log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"
        )

    def destroy(self) -> None:
        subprocess.run(
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.mark.root
@pytest.mark.postgres
def test_database_stopped_then_started(tmp_path: Path, postgres: PrivatePostgres) -> None:
    """With PostgreSQL stopped the collector answers 503; agents spool; when it is back,
    everything arrives."""
    collector = CollectorProcess(tmp_path, postgres.url).start()
    agent = AgentProcess(collector, tmp_path / "agent", "pg-test-host", tmp_path / "agent.log")
    agent.start()
    try:
        wait_until("two reports", lambda: len(stored(collector, "pg-test-host")) >= 2)
        postgres.stop()
        health = requests.get(collector.url + "/healthz", timeout=10)
        assert health.status_code == 503
        assert health.headers["Retry-After"] == "5"
        token = (tmp_path / "agent" / "token").read_text().strip()
        refused = requests.post(
            collector.url + "/api/v1/report",
            data=b"{}",
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code in {503, 422}  # 422 only if the token was still cached
        before = agent.last_sequence()
        wait_until(
            "reports to pile up in the spool",
            lambda: agent.last_sequence() >= before + 4 and agent.spooled() >= 3,
            timeout=30,
        )
        assert any(
            "HTTP 503" in e.get("error", "") for e in agent.events("delivery failed, will retry")
        )
        postgres.start()
        wait_until(
            "the spool to drain",
            lambda: (
                agent.spooled() == 0
                and stored(collector, "pg-test-host")[-1]["sequence"] == agent.last_sequence()
            ),
            timeout=90,
        )
    finally:
        agent.stop()
        collector.stop()
    sequences = [r["sequence"] for r in stored_after(postgres.url, "pg-test-host")]
    assert sequences == sorted(set(sequences))
    assert set(sequences) | agent.spooled_sequences() == set(range(1, agent.last_sequence() + 1))
    assert consistency_problems(postgres.url) == []
