"""A migrated database for each storage test (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.store import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


class Statements(list[str]):
    """The SQL statements sent to the database, in order (an executemany counts once)."""

    def of(self, verb: str) -> list[str]:
        return [s for s in self if s.lstrip().upper().startswith(verb)]


@pytest.fixture
def statements(store: Store) -> Iterator[Statements]:
    sent = Statements()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(store.database.engine, "before_cursor_execute", record)
    yield sent
    event.remove(store.database.engine, "before_cursor_execute", record)


def enroll(store: Store, *host_ids: str) -> None:
    with store.write() as conn:
        for host_id in host_ids:
            store.hosts.create(conn, host_id, None, T0)
