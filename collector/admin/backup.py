"""``fleetwatch backup FILE`` and ``fleetwatch restore FILE``: the collector's database, saved
while it serves and restored into a new one (collector/storage/backup.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fleetwatch.collector.admin.cli import CliError, _collector_settings, _server_options

if TYPE_CHECKING:
    import argparse


def _database_url(args: argparse.Namespace) -> str:
    return _collector_settings(args).resolved_database_url


def cmd_backup(args: argparse.Namespace) -> int:
    from fleetwatch.collector.storage.backup import BackupError, backup
    from fleetwatch.collector.storage.engine import DatabaseURLError

    try:
        made = backup(_database_url(args), args.file)
    except (BackupError, DatabaseURLError) as exc:
        raise CliError(str(exc)) from exc
    print(
        f"backed up to {made.path} ({made.kind}, {made.size} bytes, "
        f"schema {made.schema_version or '-'})"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from fleetwatch.collector.storage.backup import BackupError, restore
    from fleetwatch.collector.storage.engine import DatabaseURLError

    try:
        version = restore(args.file, _database_url(args))
    except (BackupError, DatabaseURLError) as exc:
        raise CliError(str(exc)) from exc
    print(f"restored {args.file} (schema {version or '-'}); start the collector on it")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = subparsers.add_parser(
        "backup",
        help="save the collector's database to a new file, while it serves",
        description="Save the collector's database to FILE while the collector serves: "
        "SQLite's online backup, or pg_dump for PostgreSQL. FILE must not exist.",
    )
    backup.add_argument("file", type=Path, metavar="FILE")
    _server_options(backup)
    backup.set_defaults(func=cmd_backup)
    restore = subparsers.add_parser(
        "restore",
        help="restore a backup into a new, empty database",
        description="Restore FILE (made by `fleetwatch backup`) into the collector's database, "
        "which must be new or empty; then apply newer migrations. Agents keep their tokens.",
    )
    restore.add_argument("file", type=Path, metavar="FILE")
    _server_options(restore)
    restore.set_defaults(func=cmd_restore)
