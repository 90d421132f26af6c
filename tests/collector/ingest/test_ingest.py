"""Ingesting reports into a real database: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from fleetwatch.collector.ingest.writer import Submission
from fleetwatch.collector.refusals import HostMismatch
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.fleet_view import FindingFilter, FleetView, Scope
from fleetwatch.collector.storage.tables import blobs, findings, reports
from fleetwatch.schema import Report
from tests.helpers import full, make_report, ports_section, section_data

POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_pending_security_updates = 0
security_update_grace_days = 7
"""


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[CollectorService]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    svc = CollectorService(
        CollectorSettings(
            database_url=database_url,
            policy=policy,
            enroll_secret="s3cret",
            data_dir=tmp_path,
        )
    )
    svc.start()
    yield svc
    svc.stop()


def ingest(svc: CollectorService, body: dict[str, Any], now: datetime | None = None) -> Any:
    return svc.ingestor.ingest(Report.model_validate(body), body["host_id"], now)


def count(svc: CollectorService, table: Any, *where: Any) -> int:
    with svc.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def open_keys(svc: CollectorService, host_id: str) -> set[tuple[str, str]]:
    with svc.store.read() as conn:
        return {(f.rule, f.key) for f in svc.store.findings.open_for(conn, host_id)}


class TestIngest:
    def test_full_report_is_stored_with_its_findings(self, service: CollectorService) -> None:
        service.identity.enroll("web-01", "s3cret")
        sections = make_report("web-01", 1)["sections"]
        sections["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8080))
        ack = ingest(service, make_report("web-01", 1, sections))
        assert ack.status == "stored"
        assert set(ack.sections) == set(sections)
        assert ack.missing == []
        assert ("allowed_ports", "tcp/8080") in open_keys(service, "web-01")

    def test_hash_only_report_after_a_full_one(self, service: CollectorService) -> None:
        """Sections sent as the acknowledged hash are accepted and nothing is stored again."""
        service.identity.enroll("web-01", "s3cret")
        ack = ingest(service, make_report("web-01", 1))
        blobs_after_first = count(service, blobs)
        hash_only = {name: {"hash": content_hash} for name, content_hash in ack.sections.items()}
        second = ingest(service, make_report("web-01", 2, hash_only))
        assert second.status == "stored"
        assert second.missing == []
        assert second.sections == ack.sections
        assert count(service, blobs) == blobs_after_first
        # the second report brought nothing new: the first one's row stands for it
        assert count(service, reports) == 1
        with service.store.read() as conn:
            (row,) = service.store.reports.of_host(conn, "web-01", 10)
        assert (row.sequence, row.through) == (1, 2)

    def test_same_package_list_is_stored_once_across_hosts(self, service: CollectorService) -> None:
        """Content is stored by hash: two hosts with one package list share one copy."""
        for host in ("a", "b"):
            service.identity.enroll(host, "s3cret")
            ingest(service, make_report(host, 1))
        assert count(service, blobs, blobs.c.section == "packages") == 1

    def test_empty_database_asks_for_the_full_report(self, service: CollectorService) -> None:
        """A hash the collector does not hold is named as missing, so the agent sends it in full."""
        service.identity.enroll("web-01", "s3cret")
        body = make_report(
            "web-01", 1, {"packages": {"hash": "f" * 64}, "checks": full("checks", {"results": []})}
        )
        ack = ingest(service, body)
        assert ack.missing == ["packages"]
        assert list(ack.sections) == ["checks"]
        with service.store.read() as conn:
            detail = service.store.hosts.get(conn, "web-01")
        assert detail is not None
        assert detail.sections["packages"].missing

    def test_a_resent_report_is_acknowledged_not_stored_twice(
        self, service: CollectorService
    ) -> None:
        service.identity.enroll("web-01", "s3cret")
        body = make_report("web-01", 1)
        first = ingest(service, body)
        again = ingest(service, body)
        assert again.status == "duplicate"
        assert again.sections == first.sections
        assert count(service, reports) == 1

    def test_a_host_reports_only_as_itself(self, service: CollectorService) -> None:
        service.identity.enroll("web-01", "s3cret")
        with pytest.raises(HostMismatch):
            service.ingestor.ingest(Report.model_validate(make_report("web-02", 1)), "web-01")
        assert count(service, reports) == 0

    def test_collector_hashes_the_content_itself(self, service: CollectorService) -> None:
        """A wrong hash claimed by the agent does not poison the content store."""
        service.identity.enroll("web-01", "s3cret")
        body = make_report("web-01", 1)
        body["sections"]["checks"] = {"hash": "0" * 64, "data": {"results": []}}
        ack = ingest(service, body)
        assert ack.sections["checks"] != "0" * 64


class TestFindingLifecycle:
    def test_finding_opens_stays_and_resolves(self, service: CollectorService) -> None:
        """first_seen stays, last_seen moves on, resolved_at is set when the problem is gone."""
        service.identity.enroll("web-01", "s3cret")
        t0 = datetime.now(UTC) - timedelta(minutes=30)
        sections = {"ports": ports_section(("tcp", "0.0.0.0", 8080))}
        ingest(service, make_report("web-01", 1, sections, collected_at=t0))
        ingest(service, make_report("web-01", 2, sections, collected_at=t0 + timedelta(minutes=5)))
        with service.store.read() as conn:
            (row,) = service.store.findings.query(conn, host_ids=["web-01"])
        assert row.first_seen == t0
        assert row.last_seen == t0 + timedelta(minutes=5)
        assert row.resolved_at is None
        fixed = {"ports": ports_section(("tcp", "0.0.0.0", 22))}
        ingest(service, make_report("web-01", 3, fixed, collected_at=t0 + timedelta(minutes=10)))
        with service.store.read() as conn:
            (row,) = service.store.findings.query(conn, host_ids=["web-01"])
        assert row.resolved_at == t0 + timedelta(minutes=10)
        # the problem comes back before the fix was verified: the same case reopens
        ingest(service, make_report("web-01", 4, sections, collected_at=t0 + timedelta(minutes=15)))
        assert count(service, findings) == 1
        assert count(service, findings, findings.c.resolved_at.is_(None)) == 1

    def test_a_failed_section_keeps_its_findings_open(self, service: CollectorService) -> None:
        """When the agent could not collect ports, the open port finding is neither cleared nor confirmed."""
        service.identity.enroll("web-01", "s3cret")
        ingest(
            service, make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 8080))})
        )
        ingest(service, make_report("web-01", 2, {"ports": {"error": "psutil: permission denied"}}))
        assert open_keys(service, "web-01") == {
            ("allowed_ports", "tcp/8080"),
            ("collection_errors", "ports"),
        }

    def test_security_update_age_is_counted_from_first_seen(
        self, service: CollectorService
    ) -> None:
        """A pending security update becomes a finding once it has been pending past the grace."""
        service.identity.enroll("web-01", "s3cret")
        updates = section_data("updates")
        packages = section_data("packages")
        t0 = datetime.now(UTC) - timedelta(days=10)
        sent = {"updates": full("updates", updates), "packages": full("packages", packages)}
        ingest(service, make_report("web-01", 1, sent, collected_at=t0))
        assert not any(rule == "security_updates" for rule, _ in open_keys(service, "web-01"))
        # eight days later the same updates are still pending: the report repeats the hash
        with service.store.read() as conn:
            host = service.store.hosts.get(conn, "web-01")
        assert host is not None
        same = {name: {"hash": host.sections[name].hash} for name in ("updates", "packages")}
        ingest(service, make_report("web-01", 2, same, collected_at=t0 + timedelta(days=8)))
        overdue = {key for rule, key in open_keys(service, "web-01") if rule == "security_updates"}
        sources = {row[0]: row[3] for row in packages["packages"]}
        security = {sources.get(u["name"], u["name"]) for u in updates["updates"] if u["security"]}
        assert overdue == security

    def test_late_old_report_does_not_replace_the_latest(self, service: CollectorService) -> None:
        """A resent older report is stored for the record but the newest state stays."""
        service.identity.enroll("web-01", "s3cret")
        ingest(service, make_report("web-01", 2, {"ports": ports_section(("tcp", "0.0.0.0", 22))}))
        ingest(
            service, make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 8080))})
        )
        assert open_keys(service, "web-01") == set()
        with service.store.read() as conn:
            host = service.store.hosts.get(conn, "web-01")
        assert host is not None
        assert host.last_sequence == 2

    def test_policy_change_reevaluates_every_host(
        self, service: CollectorService, tmp_path: Path
    ) -> None:
        """A changed policy file is applied to every host's latest report at once."""
        service.identity.enroll("web-01", "s3cret")
        ingest(
            service, make_report("web-01", 1, {"ports": ports_section(("tcp", "0.0.0.0", 8080))})
        )
        assert open_keys(service, "web-01") == {("allowed_ports", "tcp/8080")}
        (tmp_path / "policy.toml").write_text(
            POLICY.replace('["tcp/22"]', '["tcp/22", "tcp/8080"]')
        )
        changed, evaluated = service.reload_policy()
        assert (changed, evaluated) == (True, 1)
        assert open_keys(service, "web-01") == set()


class TestLastSeen:
    """A finding's `last_seen` follows its host's reports without a write per report."""

    @staticmethod
    def quiet(host: str, sequence: int, held: dict[str, str], at: datetime) -> dict[str, Any]:
        """A report as real agents send one between changes: every section by hash but the
        volatile figures, which are new each time."""
        resources = section_data("resources")
        resources["load_average"] = [sequence / 100, 0.5, 0.25]
        sections: dict[str, Any] = {n: {"hash": h} for n, h in held.items() if n != "resources"}
        sections["resources"] = full("resources", resources)
        return make_report(host, sequence, sections, collected_at=at)

    @staticmethod
    def findings_written(svc: CollectorService, send: Any) -> list[str]:
        """The statements that wrote to the findings table while ``send()`` ran."""
        written: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            words = statement.split(None, 3)
            if words[0].upper() in {"INSERT", "UPDATE", "DELETE"} and "findings" in words[:3]:
                written.append(statement)

        event.listen(svc.engine, "before_cursor_execute", record)
        try:
            send()
        finally:
            event.remove(svc.engine, "before_cursor_execute", record)
        return written

    @staticmethod
    def shown(svc: CollectorService, host: str) -> list[Any]:
        with svc.store.read() as conn:
            return svc.store.findings.query(conn, host_ids=[host])

    def test_unchanged_reports_write_nothing_to_findings(self, service: CollectorService) -> None:
        """Reports that find the same problems write no finding; last_seen is the latest of them."""
        service.identity.enroll("web-01", "s3cret")
        t0 = datetime.now(UTC) - timedelta(hours=2)
        sections = make_report("web-01", 1)["sections"]
        sections["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8080))
        ack = ingest(service, make_report("web-01", 1, sections, collected_at=t0))
        before = self.shown(service, "web-01")
        assert ("allowed_ports", "tcp/8080") in {(f.rule, f.key) for f in before}
        with service.store.read() as conn:
            stored = conn.execute(select(findings).order_by(findings.c.id)).all()
        last = t0 + timedelta(minutes=5 * 12)

        def send() -> None:
            for n in range(2, 14):
                at = t0 + timedelta(minutes=5 * (n - 1))
                ingest(service, self.quiet("web-01", n, ack.sections, at))

        assert self.findings_written(service, send) == []
        with service.store.read() as conn:
            assert conn.execute(select(findings).order_by(findings.c.id)).all() == stored
        after = self.shown(service, "web-01")
        assert [f.id for f in after] == [f.id for f in before]
        assert {f.last_seen for f in after if f.open} == {last}
        assert {f.first_seen for f in after} == {t0}

    def test_the_api_and_the_dashboard_show_the_latest_report(
        self, service: CollectorService
    ) -> None:
        """A finding's page, its API answer and the host's findings agree on last_seen."""
        service.identity.enroll("web-01", "s3cret")
        t0 = datetime.now(UTC) - timedelta(hours=1)
        sections = {"ports": ports_section(("tcp", "0.0.0.0", 8080))}
        ack = ingest(service, make_report("web-01", 1, sections, collected_at=t0))
        ingest(service, self.quiet("web-01", 2, ack.sections, t0 + timedelta(minutes=5)))
        (row,) = self.shown(service, "web-01")
        service.fleet_recorder.place()
        with service.store.read() as conn:
            one = service.store.findings.get(conn, row.id)
            many = service.store.findings.get_many(conn, [row.id])
            lines, _ = FleetView(conn, 3600).finding_page(Scope(), FindingFilter(host_id="web-01"))
        assert one is not None
        assert {row.last_seen, one.last_seen, many[0].last_seen} == {t0 + timedelta(minutes=5)}
        assert [line.last_seen for line in lines] == [t0 + timedelta(minutes=5)]

    def test_a_resolved_finding_was_last_seen_at_the_report_before(
        self, service: CollectorService
    ) -> None:
        """Resolving writes the time of the last report that still found the problem."""
        service.identity.enroll("web-01", "s3cret")
        t0 = datetime.now(UTC) - timedelta(hours=1)
        sections = {"ports": ports_section(("tcp", "0.0.0.0", 8080))}
        ack = ingest(service, make_report("web-01", 1, sections, collected_at=t0))
        for n in (2, 3):
            at = t0 + timedelta(minutes=5 * (n - 1))
            ingest(service, self.quiet("web-01", n, ack.sections, at))
        fixed = {"ports": ports_section(("tcp", "0.0.0.0", 22))}
        ingest(service, make_report("web-01", 4, fixed, collected_at=t0 + timedelta(minutes=15)))
        (row,) = self.shown(service, "web-01")
        assert row.resolved_at == t0 + timedelta(minutes=15)
        assert row.last_seen == t0 + timedelta(minutes=10)

    def test_a_finding_the_rules_cannot_tell_about_keeps_its_last_seen(
        self, service: CollectorService
    ) -> None:
        """While its section cannot be collected, a finding stays last seen where it was; it
        moves on when a report finds it again."""
        service.identity.enroll("web-01", "s3cret")
        t0 = datetime.now(UTC) - timedelta(hours=1)
        sections = {"ports": ports_section(("tcp", "0.0.0.0", 8080))}
        ingest(service, make_report("web-01", 1, sections, collected_at=t0))
        failed = {"ports": {"error": "psutil: permission denied"}}
        for n in (2, 3):
            at = t0 + timedelta(minutes=5 * (n - 1))
            ingest(service, make_report("web-01", n, failed, collected_at=at))
            port = next(f for f in self.shown(service, "web-01") if f.rule == "allowed_ports")
            assert (port.open, port.last_seen) == (True, t0)
        back = t0 + timedelta(minutes=15)
        ingest(service, make_report("web-01", 4, sections, collected_at=back))
        port = next(f for f in self.shown(service, "web-01") if f.rule == "allowed_ports")
        assert (port.open, port.last_seen) == (True, back)


class TestPrune:
    def test_old_reports_and_released_contents_go(self, service: CollectorService) -> None:
        """Reports past retention go (never a host's latest), and contents no host holds."""
        service.identity.enroll("web-01", "s3cret")
        old = datetime.now(UTC) - timedelta(days=60)
        ingest(
            service, make_report("web-01", 1, {"checks": full("checks", {"results": []})}), now=old
        )
        ingest(
            service,
            make_report(
                "web-01",
                2,
                {
                    "checks": full(
                        "checks",
                        {"results": [{"name": "x", "kind": "tcp", "target": "t", "ok": True}]},
                    )
                },
            ),
            now=old + timedelta(hours=1),
        )
        assert count(service, blobs) == 2
        gone_reports, gone_contents = service.prune()
        assert (gone_reports, gone_contents) == (1, 1)
        assert count(service, reports) == 1
        assert count(service, blobs) == 1


class TestBatches:
    @staticmethod
    def batch(svc: CollectorService, bodies: list[dict[str, Any]]) -> list[str]:
        """Ingest the reports as one batch; return the SQL statements it sent."""
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        submissions = [
            Submission(Report.model_validate(b), b["host_id"], datetime.now(UTC)) for b in bodies
        ]
        event.listen(svc.engine, "before_cursor_execute", record)
        try:
            results = svc.ingestor.ingest_batch(submissions)
        finally:
            event.remove(svc.engine, "before_cursor_execute", record)
        assert all(not isinstance(r, Exception) and r.status == "stored" for r in results)
        return sent

    def test_a_batch_costs_the_same_statements_whatever_its_size(
        self, service: CollectorService
    ) -> None:
        """Thirty reports, each with new content, moving findings, cost what one does.

        (A host's first report, or one from a new agent instance, costs one more look-up:
        it may be a resend of a report stored before.)
        """
        hosts = [f"web-{i:02}" for i in range(31)]
        for host in hosts:
            service.identity.enroll(host, "s3cret")

        def wave(sequence: int, hosts: list[str]) -> list[dict[str, Any]]:
            return [
                make_report(host, sequence, {"ports": ports_section(("tcp", "::", sequence + i))})
                for i, host in enumerate(hosts, start=1000 * sequence)
            ]

        self.batch(service, wave(1, hosts))
        one = self.batch(service, wave(2, hosts[:1]))
        thirty = self.batch(service, wave(2, hosts[1:]))
        assert len(thirty) == len(one)
        assert count(service, reports) == 62
        assert count(service, findings, findings.c.resolved_at.is_(None)) == 31
        assert count(service, findings) == 62

    def test_reports_of_one_host_in_one_batch(self, service: CollectorService) -> None:
        """Both are stored; the host's state is the newer one's, whatever the order."""
        service.identity.enroll("web-01", "s3cret")
        self.batch(
            service,
            [
                make_report("web-01", 2, {"ports": ports_section(("tcp", "::", 8080))}),
                make_report("web-01", 1, {"ports": ports_section(("tcp", "::", 22))}),
                make_report("web-01", 3, {"ports": ports_section(("tcp", "::", 8081))}),
            ],
        )
        assert count(service, reports) == 3
        with service.store.read() as conn:
            host = service.store.hosts.get(conn, "web-01")
        assert host is not None
        assert host.last_sequence == 3
        assert open_keys(service, "web-01") == {("allowed_ports", "tcp/8081")}


def quiet(ack: Any, disk_percent: float) -> dict[str, Any]:
    """A report that brings nothing new but load, memory and disk figures, as agents send."""
    sections: dict[str, Any] = {n: {"hash": h} for n, h in ack.sections.items() if n != "resources"}
    mounts = [{**m, "percent": disk_percent} for m in section_data("resources")["mounts"]]
    sections["resources"] = full("resources", section_data("resources", mounts=mounts))
    return sections


def rows(svc: CollectorService, host_id: str) -> list[tuple[int, int | None]]:
    with svc.store.read() as conn:
        return [
            (r.sequence, r.through) for r in reversed(svc.store.reports.of_host(conn, host_id, 100))
        ]


class TestQuietReports:
    def test_a_run_of_quiet_reports_is_one_row_and_a_change_starts_another(
        self, service: CollectorService
    ) -> None:
        """Reports that bring nothing new extend the row before; new content gets a row."""
        service.identity.enroll("web-01", "s3cret")
        ack = ingest(service, make_report("web-01", 1))
        for sequence in range(2, 6):
            assert (
                ingest(service, make_report("web-01", sequence, quiet(ack, 20.0))).status
                == "stored"
            )
        changed = quiet(ack, 20.0)
        changed["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 9999))
        after_change = ingest(service, make_report("web-01", 6, changed))
        ingest(service, make_report("web-01", 7, quiet(after_change, 21.0)))
        assert rows(service, "web-01") == [(1, 5), (6, 7)]
        assert count(service, blobs, blobs.c.section == "resources") == 0

    def test_quiet_reports_in_one_batch_extend_each_hosts_row_to_its_newest(
        self, service: CollectorService
    ) -> None:
        """Quiet reports of one host in one batch, beside other hosts' quiet reports, extend
        its row through the newest; a report with new content between two quiet ones starts a
        row the second extends, and the first still extends the row before. Every host keeps
        its latest figures."""
        acks = {}
        for host in ("web-01", "web-02", "web-03"):
            service.identity.enroll(host, "s3cret")
            acks[host] = ingest(service, make_report(host, 1))
        changed = quiet(acks["web-02"], 32.0)
        changed["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 9999))
        bodies = [
            make_report("web-01", 2, quiet(acks["web-01"], 31.0)),
            make_report("web-02", 2, quiet(acks["web-02"], 32.0)),
            make_report("web-01", 3, quiet(acks["web-01"], 33.0)),
            make_report("web-02", 3, changed),
            make_report("web-03", 2, quiet(acks["web-03"], 34.0)),
            make_report("web-02", 4, {**changed, "ports": {"hash": changed["ports"]["hash"]}}),
        ]
        TestBatches.batch(service, bodies)
        assert rows(service, "web-01") == [(1, 3)]
        assert rows(service, "web-02") == [(1, 2), (3, 4)]
        assert rows(service, "web-03") == [(1, 2)]
        with service.store.read() as conn:
            latest = service.store.hosts.get_many(conn, ["web-01", "web-02", "web-03"])
        assert {h: row.last_sequence for h, row in latest.items()} == {
            "web-01": 3,
            "web-02": 4,
            "web-03": 2,
        }
        assert {
            h: json.loads(row.inline["resources"])["mounts"][0]["percent"]
            for h, row in latest.items()
        } == {"web-01": 33.0, "web-02": 32.0, "web-03": 34.0}

    def test_a_gap_in_the_sequence_starts_a_row(self, service: CollectorService) -> None:
        """A report after a lost one is not folded into the run: the gap stays visible."""
        service.identity.enroll("web-01", "s3cret")
        ack = ingest(service, make_report("web-01", 1))
        ingest(service, make_report("web-01", 2, quiet(ack, 20.0)))
        ingest(service, make_report("web-01", 4, quiet(ack, 20.0)))
        assert rows(service, "web-01") == [(1, 2), (4, None)]

    def test_a_report_sent_again_inside_a_run_is_a_duplicate(
        self, service: CollectorService
    ) -> None:
        """Sending again a report that a row stands for is acknowledged, not stored twice."""
        service.identity.enroll("web-01", "s3cret")
        ack = ingest(service, make_report("web-01", 1))
        for sequence in (2, 3):
            ingest(service, make_report("web-01", sequence, quiet(ack, 20.0)))
        again = ingest(service, make_report("web-01", 2, quiet(ack, 20.0)))
        assert (again.status, again.sequence) == ("duplicate", 2)
        assert rows(service, "web-01") == [(1, 3)]

    def test_rules_read_inline_resources_after_a_policy_change(
        self, service: CollectorService, tmp_path: Path
    ) -> None:
        """Resources kept on the host row are what the rules see, also on re-evaluation."""
        service.identity.enroll("web-01", "s3cret")
        ack = ingest(service, make_report("web-01", 1))
        ingest(service, make_report("web-01", 2, quiet(ack, 97.0)))
        assert not any(rule == "disk_usage" for rule, _ in open_keys(service, "web-01"))
        (tmp_path / "policy.toml").write_text(POLICY + "max_disk_percent = 90\n")
        service.policy.reload_if_changed()
        service.ingestor.reevaluate()
        assert any(rule == "disk_usage" for rule, _ in open_keys(service, "web-01"))
