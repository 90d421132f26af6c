"""A lease held by one collector process of the fleet at a time, for work done once.

Housekeeping (re-evaluating every host after a policy change, pruning old reports) must run
once per fleet, however many worker processes or collector hosts share the database. The
holder is whoever takes the lease first; it keeps it while it lives, and a process that dies
(however it dies) lets it go, so another takes over at its next try:

- on PostgreSQL, a session-level advisory lock (``pg_try_advisory_lock``) held by one
  connection kept open for it: the server releases it when that session ends;
- on SQLite (one machine by nature), an exclusive ``flock`` on a file beside the database:
  the kernel releases it when the process exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = structlog.get_logger(__name__)


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a lease name (PostgreSQL's advisory lock id)."""
    return int.from_bytes(
        hashlib.sha256(f"fleetwatch:{name}".encode()).digest()[:8], "big", signed=True
    )


class FleetLease:
    """``held()`` is True in exactly one process of the fleet at a time (for each name)."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._connection: Connection | None = None
        self._key = 0
        self._file: int | None = None
        self._memory = False

    def held(self) -> bool:
        """Whether this process holds the lease now, taking it if it is free."""
        if self.engine.dialect.name == "postgresql":
            return self._held_postgresql()
        return self._held_sqlite()

    def release(self) -> None:
        """Give the lease up (also done by the database or the kernel when the process ends)."""
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
                )
            with contextlib.suppress(DBAPIError):
                self._connection.close()
            self._connection = None
        if self._file is not None:
            os.close(self._file)  # closing the descriptor drops the flock
            self._file = None
        self._memory = False

    def _held_postgresql(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
            except DBAPIError:
                # the session is gone, and its advisory lock with it: try again from scratch
                log.warning("lost the housekeeping lease with the database connection")
                with contextlib.suppress(DBAPIError):
                    self._connection.close()
                self._connection = None
            else:
                return True
        # autocommit: the session holds the lock, and no transaction stays open meanwhile
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            # advisory locks are database-wide: the schema in use is part of the key, so two
            # fleets in two schemas of one database each have their own housekeeper
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            self._key = _advisory_key(f"{schema}:{self.name}")
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            ).scalar_one()
        except DBAPIError:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def _held_sqlite(self) -> bool:
        if self._file is not None or self._memory:
            return True
        database = self.engine.url.database
        if not database or database == ":memory:":
            self._memory = True  # a database no other process can open
            return True
        path = Path(f"{database}.{self.name}.lock")
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._file = descriptor
        return True
