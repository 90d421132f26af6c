"""`fleetwatch backup` while a real collector serves a real agent, `fleetwatch restore` into a
new database, a new collector on it: the agent carries on with its token, never enrolling
again (the new collector does not even accept the old enrollment secret). On SQLite and, when
configured, on PostgreSQL (a database of the test's own: pg_dump copies whole databases)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ENV
from tests.helpers import AgentProcess, CollectorProcess, received, wait_until

BIN = Path(sys.executable).parent
HOST = "backup-01"


def fleetwatch(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    return subprocess.run(
        [str(BIN / "fleetwatch"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URLs of the first collector's database and of the new, empty one."""
    if request.param == "sqlite":
        yield (
            f"sqlite:///{tmp_path / 'old' / 'fleetwatch.db'}",
            f"sqlite:///{tmp_path / 'new' / 'fleetwatch.db'}",
        )
        return
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from fleetwatch.collector.storage.engine import normalize_url

    base = make_url(normalize_url(os.environ[POSTGRES_ENV]))
    names = [f"fwbackup_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield tuple(base.set(database=n).render_as_string(hide_password=False) for n in names)  # type: ignore[misc]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.slow
def test_a_restored_collector_keeps_its_agents(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    """Backup while serving, restore into a new database, new collector: the agent delivers
    again with its token, and its history from before the backup is there."""
    old_url, new_url = two_databases
    first = CollectorProcess(tmp_path, old_url).start()
    agent = AgentProcess(first, tmp_path / "agent", HOST, tmp_path / "agent.log").start()
    second: CollectorProcess | None = None
    try:
        wait_until("two reports delivered", lambda: len(agent.acknowledged()) >= 2)
        backup = tmp_path / "fleetwatch.backup"
        made = fleetwatch("backup", str(backup), "--database-url", old_url)  # while serving
        assert made.returncode == 0, made.stderr
        assert backup.stat().st_mode & 0o777 == 0o600
        # what the backup holds: reports up to this sequence at least
        held = max(agent.acknowledged())
        wait_until("a report after the backup", lambda: max(agent.acknowledged()) > held + 1)
        first.stop()

        restored = fleetwatch("restore", str(backup), "--database-url", new_url)
        assert restored.returncode == 0, restored.stderr
        # a new collector on the same address, which would refuse a new enrollment
        second = CollectorProcess(tmp_path, new_url)
        second.port, second.url = first.port, first.url
        second.args[second.args.index("--port") + 1] = str(first.port)
        second.env["FLEETWATCH_ENROLL_SECRET"] = "not-the-old-secret-" + uuid.uuid4().hex
        second.start()
        enrolled_before = len(agent.events("enrolled"))
        delivered_before = max(agent.acknowledged())
        wait_until(
            "a report delivered to the restored collector",
            lambda: max(agent.acknowledged()) > delivered_before,
        )
        assert len(agent.events("enrolled")) == enrolled_before == 1
        reports = second.api(f"/api/v1/hosts/{HOST}/reports", limit=500)
        sequences = {r["sequence"] for r in received(reports)}
        assert {1, 2} <= sequences  # from before the backup
        assert max(sequences) > delivered_before  # and from after the restore
    finally:
        agent.stop()
        first.stop()
        if second is not None:
            second.stop()


class TestRefusals:
    def test_a_backup_never_overwrites(self, tmp_path: Path) -> None:
        """An existing backup file is left alone, and the command says why it stopped."""
        url = f"sqlite:///{tmp_path / 'fleetwatch.db'}"
        assert fleetwatch("db", "upgrade", "--database-url", url).returncode == 0
        target = tmp_path / "backup"
        target.write_text("an older backup")
        done = fleetwatch("backup", str(target), "--database-url", url)
        assert done.returncode == 1
        assert "exists; a backup never overwrites a file" in done.stderr
        assert target.read_text() == "an older backup"

    def test_a_restore_never_replaces_a_database(self, tmp_path: Path) -> None:
        """Restoring over a database in use is refused; the database is unchanged."""
        url = f"sqlite:///{tmp_path / 'fleetwatch.db'}"
        assert fleetwatch("db", "upgrade", "--database-url", url).returncode == 0
        backup = tmp_path / "fleetwatch.backup"
        assert fleetwatch("backup", str(backup), "--database-url", url).returncode == 0
        before = (tmp_path / "fleetwatch.db").read_bytes()
        done = fleetwatch("restore", str(backup), "--database-url", url)
        assert done.returncode == 1
        assert "a restore goes into a new database only" in done.stderr
        assert (tmp_path / "fleetwatch.db").read_bytes() == before

    def test_a_file_that_is_no_backup(self, tmp_path: Path) -> None:
        """A file that is neither kind of backup is named as such; nothing is created."""
        junk = tmp_path / "junk"
        junk.write_text("hello")
        new = tmp_path / "new" / "fleetwatch.db"
        done = fleetwatch("restore", str(junk), "--database-url", f"sqlite:///{new}")
        assert done.returncode == 1
        assert "is neither a SQLite backup nor a pg_dump archive" in done.stderr
        assert not new.exists()

    def test_a_sqlite_file_that_is_not_fleetwatch(self, tmp_path: Path) -> None:
        """Another program's SQLite database is refused before anything is written."""
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE t (x)")
        new = tmp_path / "new.db"
        done = fleetwatch("restore", str(other), "--database-url", f"sqlite:///{new}")
        assert done.returncode == 1
        assert "is not a fleetwatch backup" in done.stderr
        assert not new.exists()
