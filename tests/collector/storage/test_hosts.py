from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from fleetwatch.collector.storage.hosts import MISSING_BASE, HostChange, HostRow, SectionState
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import hosts
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


class TestSectionState:
    def test_a_failed_or_missing_section_keeps_its_content_but_not_for_the_rules(self) -> None:
        """An error or a missing content leaves the hash held, and the section not current."""
        held = SectionState("1" * 64)
        assert held.current == "1" * 64
        failed = held.failed("boom")
        assert failed == SectionState("1" * 64, error="boom")
        assert failed.current is None
        both = failed.gone_missing()
        assert both == SectionState("1" * 64, error="boom", missing=MISSING_BASE)
        assert both.current is None


# every form a section's state takes, and its JSON in the hosts.sections column
SECTIONS = {
    "ports": SectionState("1" * 64),
    "checks": SectionState(error="psutil: permission denied"),
    "packages": SectionState(missing=MISSING_BASE),
    "updates": SectionState("2" * 64, error="apt-get: timed out"),
    "system": SectionState("3" * 64, error="boom", missing=MISSING_BASE),
}
SECTIONS_JSON = {
    "ports": {"hash": "1" * 64},
    "checks": {"error": "psutil: permission denied"},
    "packages": {"missing": MISSING_BASE},
    "updates": {"hash": "2" * 64, "error": "apt-get: timed out"},
    "system": {"hash": "3" * 64, "error": "boom", "missing": MISSING_BASE},
}


class TestStoredState:
    def test_sections_round_trip_through_their_json_column(self, store: Store) -> None:
        """What is written is read back as it was, and the column holds only the keys set."""
        enroll(store, "web-01")
        before = get(store, "web-01")
        after = reported(before, 1, sections=SECTIONS)
        with store.write() as conn:
            store.hosts.update(conn, [HostChange(before, after)])
        with store.read() as conn:
            (stored,) = conn.execute(select(hosts.c.sections)).scalars()
        assert stored == SECTIONS_JSON
        assert get(store, "web-01") == after

    def test_sections_as_stored_before_are_read_and_written_unchanged(self, store: Store) -> None:
        """A column written by earlier collectors (keys in the order they were added) reads as
        the same states, and writing those states back stores the same JSON."""
        enroll(store, "web-01")
        earlier = {
            **SECTIONS_JSON,
            "system": {"hash": "3" * 64, "missing": MISSING_BASE, "error": "boom"},
        }
        with store.write() as conn:
            conn.execute(update(hosts).values(sections=earlier))
        host = get(store, "web-01")
        assert host.sections == SECTIONS
        later = reported(host, 1, sections={**host.sections, "ports": SectionState("4" * 64)})
        with store.write() as conn:
            store.hosts.update(conn, [HostChange(host, later)])
            (stored,) = conn.execute(select(hosts.c.sections)).scalars()
        assert stored == {**SECTIONS_JSON, "ports": {"hash": "4" * 64}}

    def test_conditions_round_trip_as_iso_times(self, store: Store) -> None:
        """Aging conditions are datetimes in the record and ISO times in the column."""
        enroll(store, "web-01")
        before = get(store, "web-01")
        since = T0 - timedelta(days=3, microseconds=5)
        conditions = {
            "security_update": {"openssl": since, "libc6": T0},
            "reboot_required": {"": T0},
        }
        after = reported(before, 1, conditions=conditions)
        with store.write() as conn:
            store.hosts.update(conn, [HostChange(before, after)])
            (stored,) = conn.execute(select(hosts.c.conditions)).scalars()
        assert stored == {
            "security_update": {
                "openssl": "2024-04-28T11:59:59.999995+00:00",
                "libc6": "2024-05-01T12:00:00+00:00",
            },
            "reboot_required": {"": "2024-05-01T12:00:00+00:00"},
        }
        assert get(store, "web-01") == after


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
        sections = {"ports": SectionState("1" * 64)}
        assert HostChange(before, reported(before, 1, sections=sections)).columns()["sections"] == {
            "ports": {"hash": "1" * 64}
        }

    def test_is_of_one_host(self, store: Store) -> None:
        """A change from one host's row to another's is refused."""
        enroll(store, "web-01", "web-02")
        with pytest.raises(ValueError, match="web-02"):
            HostChange(get(store, "web-01"), get(store, "web-02"))


class TestHosts:
    def test_update_writes_the_new_state(self, store: Store) -> None:
        enroll(store, "web-01")
        before = get(store, "web-01")
        after = reported(before, 3, sections={"ports": SectionState("1" * 64)}, spool_error="full")
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
                reported(host, 1, sections={"ports": SectionState(f"{i:064}")})
                if i % 2
                else reported(host, 1),
            )
            for i, host in enumerate(hosts.values())
        ]
        statements.clear()
        with store.write() as conn:
            store.hosts.update(conn, changes)
        assert len(statements.of("UPDATE")) == 2
        assert get(store, "web-03").sections == {"ports": SectionState(f"{3:064}")}
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
        sections_a = {"ports": SectionState("1" * 64), "checks": SectionState(error="boom")}
        sections_b = {
            "ports": SectionState("2" * 64, error="boom"),
            "disks": SectionState(missing="x"),
        }
        with store.write() as conn:
            store.hosts.update(
                conn,
                [
                    HostChange(a, reported(a, 1, sections=sections_a)),
                    HostChange(b, reported(b, 1, sections=sections_b)),
                ],
            )
            assert store.hosts.held_contents(conn) == {"1" * 64, "2" * 64}
