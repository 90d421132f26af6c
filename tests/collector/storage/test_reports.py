from __future__ import annotations

from datetime import timedelta

from fleetwatch.collector.storage.reports import NewReport
from fleetwatch.collector.storage.store import Store
from tests.collector.storage.conftest import T0, Statements, enroll


def new_report(host_id: str, sequence: int, **changes: object) -> NewReport:
    values: dict[str, object] = {
        "host_id": host_id,
        "instance_id": "a" * 32,
        "sequence": sequence,
        "collected_at": T0 + timedelta(minutes=sequence),
        "received_at": T0 + timedelta(minutes=sequence),
        "agent_version": "1.0",
        "sections": {"ports": "1" * 64},
        "errors": {"checks": "boom"},
        "missing": ["packages"],
        "dropped": 0,
        "spool_error": None,
        **changes,
    }
    return NewReport(**values)  # type: ignore[arg-type]


class TestReports:
    def test_a_batch_is_one_insert(self, store: Store, statements: Statements) -> None:
        enroll(store, "a", "b")
        batch = [new_report(h, s) for h in ("a", "b") for s in range(1, 26)]
        statements.clear()
        with store.write() as conn:
            store.reports.add(conn, batch)
        assert len(statements.of("INSERT")) == 1

    def test_a_stored_report_is_found_by_its_name(self, store: Store) -> None:
        enroll(store, "a")
        sent = new_report("a", 7, spool_error="disk full", dropped=3)
        with store.write() as conn:
            store.reports.add(conn, [sent])
        with store.read() as conn:
            found = store.reports.find(conn, "a", "a" * 32, 7)
            assert store.reports.find(conn, "a", "b" * 32, 7) is None
        assert found is not None
        assert found.id > 0
        for name in ("sections", "errors", "missing", "dropped", "spool_error", "collected_at"):
            assert getattr(found, name) == getattr(sent, name)

    def test_a_host_s_reports_page_back_newest_first(self, store: Store) -> None:
        enroll(store, "a", "b")
        with store.write() as conn:
            store.reports.add(conn, [new_report(h, s) for s in range(1, 6) for h in ("a", "b")])
        with store.read() as conn:
            first = store.reports.of_host(conn, "a", 2)
            then = store.reports.of_host(conn, "a", 10, before_id=first[-1].id)
        assert [r.sequence for r in first] == [5, 4]
        assert [r.sequence for r in then] == [3, 2, 1]

    def test_prune_keeps_each_host_s_latest(self, store: Store) -> None:
        """Old reports go, but a host that went quiet keeps its newest."""
        enroll(store, "a", "b")
        with store.write() as conn:
            store.reports.add(conn, [new_report("a", s) for s in (1, 2, 3)])
            store.reports.add(conn, [new_report("b", 1)])
            assert store.reports.prune(conn, T0 + timedelta(days=1)) == 2
        with store.read() as conn:
            assert [r.sequence for r in store.reports.of_host(conn, "a", 10)] == [3]
            assert [r.sequence for r in store.reports.of_host(conn, "b", 10)] == [1]
