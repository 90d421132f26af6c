"""An enrolled fleet kept between runs: its hosts file and its database, copied for each run.

A kept fleet is a directory: ``fleet.json`` names the database, ``hosts.jsonl`` holds the
hosts (tokens, instances, sequences) as they were set up. Its database is PostgreSQL's (a
database of its own, e.g. ``bench_fleet100k``) or SQLite's (``fleet.db`` in the directory).
Each run starts from a copy of it (``CREATE DATABASE ... TEMPLATE``, or SQLite's backup), so
every run starts from the same state and the kept one is never written after its set-up. A
collector of newer code migrates the copy when it starts (``fleetwatch serve`` applies the
migrations before its workers start); the kept database stays at the schema it was made with.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fleetwatch.collector.storage.engine import normalize_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL


@dataclass
class KeptFleet:
    directory: Path
    database_url: str
    hosts: int
    complete: bool = False

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts.jsonl"

    @classmethod
    def open(cls, directory: Path) -> KeptFleet:
        record = json.loads((directory / "fleet.json").read_text())
        return cls(directory, record["database_url"], record["hosts"], record["complete"])

    @classmethod
    def make(cls, directory: Path, hosts: int, postgres: str | None, name: str) -> KeptFleet:
        """A new kept fleet in ``directory``, or the one there if its set-up did not finish."""
        if (directory / "fleet.json").exists():
            kept = cls.open(directory)
            if kept.complete or kept.hosts != hosts:
                msg = f"{directory} holds a fleet of {kept.hosts} hosts already: --reuse it"
                raise SystemExit(msg)
            return kept
        directory.mkdir(parents=True, exist_ok=True)
        url = (
            _create_database(postgres, name) if postgres else f"sqlite:///{directory / 'fleet.db'}"
        )
        kept = cls(directory, url, hosts)
        kept.save()
        return kept

    def save(self) -> None:
        record = {
            "database_url": self.database_url,
            "hosts": self.hosts,
            "complete": self.complete,
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (self.directory / "fleet.json").write_text(json.dumps(record, indent=2) + "\n")

    def copy(self) -> tuple[str, Callable[[], None]]:
        """A copy of the kept database for one run: its URL, and how to drop it."""
        if self.database_url.startswith("sqlite"):
            source = Path(make_url(self.database_url).database or "")
            target = self.directory / "run.db"
            for stale in self.directory.glob("run.db*"):
                stale.unlink()
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)

            def drop_file() -> None:
                for path in self.directory.glob("run.db*"):
                    path.unlink()

            return f"sqlite:///{target}", drop_file
        kept = make_url(normalize_url(self.database_url))
        name = f"{kept.database}_run"
        admin = create_engine(kept.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(
                text(f'CREATE DATABASE "{name}" TEMPLATE "{kept.database}" STRATEGY FILE_COPY')
            )

        # Where autovacuum is off (it is on this project's test machines), the copy would
        # carry the set-up's dead rows and no planner statistics at all: a hundred thousand
        # hosts planned as a few hundred, plans that walk every host, and the PostgreSQL CPU
        # per report counted four times over. Vacuumed and analyzed as autovacuum would have.
        vacuum_if_autovacuum_is_off(kept.set(database=name), "the copy")

        def drop_database() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return kept.set(database=name).render_as_string(hide_password=False), drop_database


def vacuum_if_autovacuum_is_off(url: URL | str, what: str) -> None:
    """VACUUM ANALYZE a PostgreSQL database a benchmark just wrote in bulk, where the server
    does not do it by itself."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if conn.execute(text("SHOW autovacuum")).scalar_one() != "on":
            print(f"  autovacuum is off on this server: VACUUM ANALYZE of {what}", flush=True)
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def _create_database(postgres: str, name: str) -> str:
    """A PostgreSQL database of the fleet's own next to ``postgres``'s (made if missing)."""
    url = make_url(normalize_url(postgres))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if exists is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
