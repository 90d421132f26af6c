from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from fleetwatch.collector.storage.hosts import HostChange, HostRow
from fleetwatch.collector.storage.store import Store
from tests.collector.storage.conftest import T0, Statements, enroll


def reported(host: HostRow, sequence: int, **changes: object) -> HostRow:
    """The host as a report of this sequence leaves it."""
    at = T0 + timedelta(minutes=sequence)
    return dataclasses.replace(
        host,
        instance_id="a" * 32,
        last_sequence=sequence,
        last_collected_at=at,
        last_received_at=at,
        **changes,  # type: ignore[arg-type]
    )


def get(store: Store, host_id: str) -> HostRow:
    with store.read() as conn:
        host = store.hosts.get(conn, host_id)
    assert host is not None
    return host


class TestHostChange:
    def test_names_only_the_columns_that_differ(self, store: Store) -> None:
        """Unchanged JSON columns are left out of the update."""
        enroll(store, "web-01")
        before = get(store, "web-01")
        after = reported(before, 1)
        assert set(HostChange(before, after).columns()) == {
            "instance_id",
            "last_sequence",
            "last_collected_at",
            "last_received_at",
        }
        sections = {"ports": {"hash": "1" * 64}}
        assert (
            HostChange(before, reported(before, 1, sections=sections)).columns()["sections"]
            == sections
        )

    def test_is_of_one_host(self, store: Store) -> None:
        """A change from one host's row to another's is refused."""
        enroll(store, "web-01", "web-02")
        with pytest.raises(ValueError, match="web-02"):
            HostChange(get(store, "web-01"), get(store, "web-02"))


class TestHosts:
    def test_update_writes_the_new_state(self, store: Store) -> None:
        enroll(store, "web-01")
        before = get(store, "web-01")
        after = reported(before, 3, sections={"ports": {"hash": "1" * 64}}, spool_error="full")
        with store.write() as conn:
            store.hosts.update(conn, [HostChange(before, after)])
        assert get(store, "web-01") == after
        assert get(store, "web-01").observed_at == T0 + timedelta(minutes=3)

    def test_a_batch_costs_one_statement_per_set_of_columns(
        self, store: Store, statements: Statements
    ) -> None:
        """Forty hosts, two kinds of change: two UPDATE statements."""
        host_ids = [f"web-{i:02}" for i in range(40)]
        enroll(store, *host_ids)
        with store.read() as conn:
            hosts = store.hosts.get_many(conn, host_ids)
        changes = [
            HostChange(
                host,
                reported(host, 1, sections={"ports": {"hash": f"{i:064}"}})
                if i % 2
                else reported(host, 1),
            )
            for i, host in enumerate(hosts.values())
        ]
        statements.clear()
        with store.write() as conn:
            store.hosts.update(conn, changes)
        assert len(statements.of("UPDATE")) == 2
        assert get(store, "web-03").sections == {"ports": {"hash": f"{3:064}"}}
        assert get(store, "web-04").last_sequence == 1

    def test_locked_reads_are_in_id_order(self, store: Store, statements: Statements) -> None:
        """Writers lock hosts in one order (so none waits on another in a cycle), on
        PostgreSQL with FOR UPDATE; SQLite's write transaction already holds everything."""
        enroll(store, "b", "a", "c")
        with store.write() as conn:
            hosts = store.hosts.get_many(conn, ["c", "a", "b"], lock=True)
        assert list(hosts) == ["a", "b", "c"]
        (query,) = [s for s in statements.of("SELECT") if "FROM hosts" in s]
        assert "ORDER BY hosts.host_id" in query
        assert ("FOR UPDATE" in query) == (store.database.dialect == "postgresql")

    def test_unlocked_reads_take_no_row_locks(self, store: Store, statements: Statements) -> None:
        enroll(store, "a")
        with store.read() as conn:
            assert store.hosts.get(conn, "a") is not None
            assert store.hosts.get(conn, "nope") is None
        assert not any("FOR UPDATE" in s for s in statements)

    def test_reenroll_window(self, store: Store) -> None:
        """Only an enrolled host can be let in again."""
        enroll(store, "web-01")
        with store.write() as conn:
            assert store.hosts.set_reenroll(conn, "web-01", T0)
            assert not store.hosts.set_reenroll(conn, "nope", T0)
        assert get(store, "web-01").reenroll_until == T0

    def test_held_contents_are_the_latest_hashes(self, store: Store) -> None:
        """A section that failed or went missing holds no content."""
        enroll(store, "a", "b")
        a, b = get(store, "a"), get(store, "b")
        sections_a = {"ports": {"hash": "1" * 64}, "checks": {"error": "boom"}}
        sections_b = {"ports": {"hash": "2" * 64, "error": "boom"}, "disks": {"missing": "x"}}
        with store.write() as conn:
            store.hosts.update(
                conn,
                [
                    HostChange(a, reported(a, 1, sections=sections_a)),
                    HostChange(b, reported(b, 1, sections=sections_b)),
                ],
            )
            assert store.hosts.held_contents(conn) == {"1" * 64, "2" * 64}
