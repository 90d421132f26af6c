"""Backing up the collector's database while it serves, and restoring it into a new one.

Everything the collector knows lives in its database: hosts, their tokens (as hashes), reports,
section contents, findings. A backup is one file:

- **SQLite**: a copy made with SQLite's online backup API (``sqlite3.Connection.backup``),
  which reads a consistent snapshot while the collector keeps writing (WAL mode lets writers
  go on), then checked with ``PRAGMA quick_check``. The copy is itself a SQLite database.
- **PostgreSQL**: ``pg_dump --format=custom``, a consistent snapshot by PostgreSQL's own
  tool, restored with ``pg_restore``. The password, when the URL has one, goes to them in
  ``PGPASSWORD``, never on a command line.

A restore goes into an empty database only (a new collector, or an old one whose database
was moved aside), then brings the schema to the newest migration: a backup made by an older
collector restores into a newer one. Host tokens survive, so agents carry on without
enrolling again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from fleetwatch.collector.storage.engine import make_engine, normalize_url, upgrade

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why. Nothing stored is lost:
    a failed backup leaves no file, a failed restore leaves the target as empty as it was."""


@dataclass(frozen=True)
class Backup:
    """A backup made: where, what kind, of which schema version."""

    path: Path
    kind: str  # "sqlite" or "pg_dump"
    schema_version: str | None
    size: int


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        msg = "an in-memory SQLite database has nothing to back up or restore into"
        raise BackupError(msg)
    return Path(url.database)


def _new_file(path: Path) -> Path:
    """A temporary name beside ``path`` for a file made 0600; ``path`` must not exist."""
    if path.exists() or path.is_symlink():
        msg = f"{path} exists; a backup never overwrites a file: choose a new name"
        raise BackupError(msg)
    if not path.parent.is_dir():
        msg = f"{path.parent}: no such directory"
        raise BackupError(msg)
    partial = path.with_name(f".{path.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a backup that was killed
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    return partial


def _schema_version(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return str(row[0]) if row else None


def _copy_sqlite(database: Path, partial: Path) -> str:
    """Copy ``database`` into the file ``partial``, check the copy; its schema version."""
    source = sqlite3.connect(database, timeout=30)
    target = sqlite3.connect(partial)
    try:
        # pages=-1: one step, under one read transaction, so a write by the collector cannot
        # make SQLite restart the copy; WAL lets the collector keep writing meanwhile
        source.backup(target)
        # one self-contained file, whatever journal mode the collector uses
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA quick_check").fetchone()[0]
        version = _schema_version(target)
    finally:
        target.close()
        source.close()
    if check != "ok":
        msg = f"the copy of {database} fails SQLite's quick_check: {check}"
        raise BackupError(msg)
    if version is None:
        msg = f"{database} is not a fleetwatch database (no schema version)"
        raise BackupError(msg)
    return version


def _backup_sqlite(url: URL, destination: Path) -> Backup:
    database = _sqlite_path(url)
    if not database.is_file():
        msg = f"{database}: no such database file"
        raise BackupError(msg)
    partial = _new_file(destination)
    try:
        version = _copy_sqlite(database, partial)
        partial.replace(destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Backup(destination, "sqlite", version, destination.stat().st_size)


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The URL as libpq reads it (no driver, no password) and the environment for the tools."""
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        msg = f"{name} is not installed (Debian: apt-get install postgresql-client)"
        raise BackupError(msg)
    return found


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        msg = f"{what} failed: {(done.stderr or done.stdout).strip()[-2000:]}"
        raise BackupError(msg)


def _backup_postgresql(url: URL, destination: Path) -> Backup:
    libpq, env = _libpq(url)
    partial = _new_file(destination)
    try:
        _run(
            [_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={partial}", libpq],
            env,
            "pg_dump",
        )
        partial.replace(destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()
    return Backup(destination, "pg_dump", version, destination.stat().st_size)


def backup(database_url: str, destination: Path) -> Backup:
    """Back up the database at ``database_url`` into the new file ``destination``, while the
    collector serves."""
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() == "sqlite":
        return _backup_sqlite(url, destination)
    return _backup_postgresql(url, destination)


def _kind(source: Path) -> str:
    try:
        with source.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        msg = f"{source}: {exc.strerror}"
        raise BackupError(msg) from exc
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "pg_dump"
    msg = f"{source} is neither a SQLite backup nor a pg_dump archive"
    raise BackupError(msg)


def _refuse_non_empty(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if tables:
        msg = (
            f"the target database is not empty ({len(tables)} tables); a restore goes into an "
            "empty database only: stop the collector and move its database aside first"
        )
        raise BackupError(msg)


def restore(source: Path, database_url: str) -> str | None:
    """Restore the backup ``source`` into the empty database at ``database_url``, then bring
    its schema to the newest migration; the schema version restored."""
    url = make_url(normalize_url(database_url))
    kind = _kind(source)
    backend = url.get_backend_name()
    if (kind == "sqlite") != (backend == "sqlite"):
        made_by = "SQLite" if kind == "sqlite" else "PostgreSQL (pg_dump)"
        msg = f"{source} is a {made_by} backup; it restores into the same kind of database only"
        raise BackupError(msg)
    if kind == "sqlite":
        target = _sqlite_path(url)
        if target.exists() and target.stat().st_size > 0:
            msg = (
                f"{target} exists; a restore goes into a new database only: stop the "
                "collector and move the file (and its -wal and -shm files) aside first"
            )
            raise BackupError(msg)
        with contextlib.closing(sqlite3.connect(source)) as backup_file:
            if _schema_version(backup_file) is None:
                msg = f"{source} is not a fleetwatch backup (no schema version)"
                raise BackupError(msg)
        engine = make_engine(database_url)  # makes the file 0600 and its folder 0700
        engine.dispose()
        try:
            with (
                contextlib.closing(sqlite3.connect(source)) as backup_file,
                contextlib.closing(sqlite3.connect(target)) as restored,
            ):
                backup_file.backup(restored)
        except BaseException:
            for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
                leftover.unlink(missing_ok=True)
            raise
    else:
        _refuse_non_empty(database_url)
        libpq, env = _libpq(url)
        _run(
            [
                _tool("pg_restore"),
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",  # all or nothing: a failure leaves the target empty
                f"--dbname={libpq}",
                str(source),
            ],
            env,
            "pg_restore",
        )
    engine = make_engine(database_url)
    try:
        upgrade(engine)  # a backup of an older collector: its schema is brought up to date
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()
    return None if version is None else str(version)
