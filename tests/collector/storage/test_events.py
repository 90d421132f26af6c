from __future__ import annotations

from datetime import timedelta

import pytest

from fleetwatch.collector.storage.events import NewEvent
from fleetwatch.collector.storage.store import Store
from tests.collector.storage.conftest import T0, Statements


class TestEvents:
    def test_appended_events_read_back_in_order(self, store: Store) -> None:
        """Events come back after a given id, oldest first, with every field kept."""
        with store.write() as conn:
            store.events.append(
                conn,
                [
                    NewEvent(T0, "opened", host_id="a", unit="parks", finding_id=7,
                             rule="allowed_ports", severity="high", subject="tcp/8081",
                             detail={"detail": "tcp/8081 is open"}),
                    NewEvent(T0 + timedelta(minutes=1), "acknowledged", actor="ops",
                             finding_id=7, detail={"note": "on it"}),
                ],
            )  # fmt: skip
        with store.read() as conn:
            first, second = store.events.after(conn, 0)
            assert store.events.after(conn, first.id) == [second]
            assert store.events.for_finding(conn, 7) == [first, second]
        assert (first.kind, first.actor, first.unit, first.subject) == (
            "opened", "collector", "parks", "tcp/8081",
        )  # fmt: skip
        assert first.detail == {"detail": "tcp/8081 is open"}
        assert second.at == T0 + timedelta(minutes=1)
        assert second.id > first.id

    def test_many_events_are_one_statement(self, store: Store, statements: Statements) -> None:
        """Appending a batch is one INSERT, however many events it holds."""
        statements.clear()
        with store.write() as conn:
            store.events.append(conn, [NewEvent(T0, "opened", host_id=str(i)) for i in range(50)])
        assert len(statements.of("INSERT")) == 1

    def test_an_unknown_kind_is_refused(self) -> None:
        """A kind the log does not know is a programming error, caught before it is stored."""
        with pytest.raises(ValueError, match="unknown event kind 'opend'"):
            NewEvent(T0, "opend")
