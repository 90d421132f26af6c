"""Transactions on the collector's database, and what differs between SQLite and PostgreSQL.

Writes go through `Database.write()`: one transaction that holds the database's write lock on
SQLite (taken at BEGIN, so writers queue instead of deadlocking) and row locks on PostgreSQL
(`Database.locking` on a query serialises the writers of those rows). Engines and schema
migrations are made in `fleetwatch.collector.storage.engine`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fleetwatch.collector.storage.engine import WRITE_OPTION

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy import ColumnElement, Connection, Engine, Select, Table
    from sqlalchemy.sql.dml import Insert
    from sqlalchemy.sql.selectable import TableValuedAlias


class Database:
    """An engine with the collector's way of reading and writing it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        # PostgreSQL reads in autocommit: at READ COMMITTED each statement sees its own
        # snapshot inside a transaction too, so a BEGIN and a ROLLBACK around a read would only
        # cost two round trips (a host token looked up, an API page).
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else engine
        )
        # SQLite has one writer at a time anyway; queueing here is fairer than its busy loop.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an exception."""
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading (on SQLite, a snapshot that writers do not block; on
        PostgreSQL, each statement on its own, as READ COMMITTED reads anyway)."""
        with self._reader.connect() as conn:
            yield conn

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        with self.read() as conn:
            conn.execute(select(1)).scalar_one()

    def insert_ignore(self, table: Table) -> Insert:
        """An INSERT that skips rows whose key is already there."""
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        return make(table).on_conflict_do_nothing()

    def locking(self, query: Select[Any]) -> Select[Any]:
        """The query, locking the rows it reads until commit where the database has row locks.

        SQLite needs none: a write transaction holds the whole database from its BEGIN.
        """
        return query.with_for_update() if self.dialect == "postgresql" else query


def among(
    conn: Connection, column: ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, one parameter however many
    values: psycopg parses again every statement of more than 50 parameters, and a batch's
    look-up of 500 hosts would pay that on every chunk."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def among_given(dialect: str, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """As `among`, with the values a parameter ``:name`` given when the statement runs (a
    list): for a statement built once per database kind, not once per call."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def as_arrays(
    table: Table, rows: Sequence[Sequence[Any]], names: Sequence[str]
) -> TableValuedAlias:
    """Rows of values for these columns of ``table``, as PostgreSQL's ``unnest`` of one array
    per column: a FROM item for an INSERT or UPDATE of many rows in a single statement of a
    few parameters, which psycopg parses once and the server plans once (an executemany sends
    a statement per row; a multi-row VALUES, a new statement text per number of rows)."""
    arrays = [
        bindparam(None, [row[i] for row in rows], type_=ARRAY(table.c[name].type))
        for i, name in enumerate(names)
    ]
    return func.unnest(*arrays).table_valued(*names).render_derived()
