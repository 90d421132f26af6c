from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fleetwatch.collector.storage.findings import FindingChange, NewFinding
from fleetwatch.collector.storage.store import Store
from tests.collector.storage.conftest import T0, Statements, enroll


def found(host_id: str, key: str, severity: str = "high") -> NewFinding:
    return NewFinding(host_id, "allowed_ports", key, severity, f"{key} is open", T0, T0)


class TestFindings:
    def test_open_findings_by_host(self, store: Store) -> None:
        """Every host asked for has a list, empty when nothing is open."""
        enroll(store, "a", "b")
        with store.write() as conn:
            store.findings.add(conn, [found("a", "tcp/80"), found("a", "tcp/81", "low")])
        with store.read() as conn:
            by_host = store.findings.open_by_host(conn, ["a", "b"])
            assert store.findings.open_counts(conn) == {"a": {"high": 1, "low": 1}}
        assert {f.key for f in by_host["a"]} == {"tcp/80", "tcp/81"}
        assert by_host["b"] == []
        assert all(f.open for f in by_host["a"])

    def test_open_tally_counts_open_overdue_and_waived_per_host(self, store: Store) -> None:
        """Per host: open findings that count, those past due, and open ones a waiver excuses;
        resolved ones are not counted, and a host with nothing open is not listed."""
        enroll(store, "a", "b", "c")
        now = T0 + timedelta(days=10)
        with store.write() as conn:
            store.findings.add(
                conn,
                [
                    replace(found("a", "tcp/80"), due_at=T0 + timedelta(days=1)),
                    replace(found("a", "tcp/81"), due_at=T0 + timedelta(days=30)),
                    replace(found("a", "tcp/82"), due_at=T0 + timedelta(days=1), waiver_id=7),
                    found("b", "tcp/80"),
                    found("c", "tcp/80"),
                ],
            )
            (gone,) = store.findings.open_for(conn, "c")
            store.findings.change(
                conn, [FindingChange(gone.id, gone.severity, gone.detail, gone.last_seen, now)]
            )
        with store.read() as conn:
            assert store.findings.open_tally(conn, now) == {"a": (2, 1, 1), "b": (1, 0, 0)}

    def test_changes_are_one_statement(self, store: Store, statements: Statements) -> None:
        """Seen again and resolved, in one batch: one UPDATE."""
        enroll(store, "a")
        with store.write() as conn:
            store.findings.add(conn, [found("a", "tcp/80"), found("a", "tcp/81")])
            seen, gone = store.findings.open_for(conn, "a")
        later = T0 + timedelta(hours=1)
        statements.clear()
        with store.write() as conn:
            store.findings.change(
                conn,
                [
                    FindingChange(seen.id, "low", "still open", later, None),
                    FindingChange(gone.id, gone.severity, gone.detail, gone.last_seen, later),
                ],
            )
        assert len(statements.of("UPDATE")) == 1
        with store.read() as conn:
            (still,) = store.findings.query(conn, host_ids=["a"], is_open=True)
            (resolved,) = store.findings.query(conn, host_ids=["a"], is_open=False)
        assert (still.id, still.severity, still.detail, still.last_seen) == (
            seen.id,
            "low",
            "still open",
            later,
        )
        assert still.first_seen == T0
        assert resolved.id == gone.id
        assert resolved.resolved_at == later
        assert not resolved.open

    def test_query_filters_and_pages(self, store: Store) -> None:
        enroll(store, "a", "b")
        with store.write() as conn:
            store.findings.add(conn, [found(h, f"tcp/{p}") for h in ("b", "a") for p in (1, 2)])
        with store.read() as conn:
            page = store.findings.query(conn, limit=3, offset=1)
            of_b = store.findings.query(conn, host_ids=["b"], rule="allowed_ports")
            assert store.findings.query(conn, rule="nope") == []
        assert [(f.host_id, f.key) for f in page] == [
            ("a", "tcp/2"),
            ("b", "tcp/1"),
            ("b", "tcp/2"),
        ]
        assert {f.host_id for f in of_b} == {"b"}
