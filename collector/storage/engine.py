"""Database engines (SQLite by default, PostgreSQL by URL) and schema migrations."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

WRITE_OPTION = "fleetwatch_write"


class DatabaseURLError(ValueError):
    """A database URL fleetwatch cannot use."""


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use psycopg 3 for them."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        msg = f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        raise DatabaseURLError(msg)
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _owner_only(Path(parsed.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=20,
        )
        _sqlite_pragmas(engine, sqlite_synchronous)
        return engine
    # No ping on each checkout (a round trip before every batch and every token looked up):
    # when PostgreSQL restarts, the first statement on a dead connection fails (that request
    # gets a 503; an agent keeps its report and sends it again) and SQLAlchemy then drops
    # every connection of the pool made before it. Connections are renewed every half hour,
    # ahead of anything between here and the database that drops idle ones.
    #
    # 30 connections at most, each kept once opened: a pool of 10 with 20 "overflow" ones
    # closed again after each use opened some 65 PostgreSQL backends a second under load (a
    # fork and a warm-up each), which cost more CPU than the reports they served.
    return create_engine(
        url,
        pool_size=30,
        max_overflow=0,
        pool_timeout=10,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


def _owner_only(database: Path) -> None:
    """Create the database's folder and file readable by their owner alone, whoever starts us.

    The file holds token hashes and every host's facts. SQLite gives its -wal and -shm files
    the database file's mode, so they follow. A folder or file that already exists keeps the
    mode its owner gave it.
    """
    missing = []
    folder = database.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        created.chmod(0o700)  # mkdir's mode is masked by the umask
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:  # noqa: ARG001
        # We issue BEGIN ourselves (below), so pysqlite must not.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock at BEGIN, so two writers never deadlock upgrading a
        # read lock; readers keep reading a snapshot meanwhile (WAL).
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "fleetwatch.collector.storage:migrations")
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
