"""A finding's case through real reports and a real database (SQLite, and PostgreSQL when
configured): opened, acknowledged, waived, resolved, verified, reopened, overdue; each step an
event in the log, written with its change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from fleetwatch.collector.compliance.feedback import Feedback
from fleetwatch.collector.refusals import FindingClosed, InvalidWaiver, NoSuchFinding
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.events import EventRow
from fleetwatch.collector.storage.findings import FindingRow
from fleetwatch.collector.storage.waivers import NewWaiver
from fleetwatch.schema import Report
from tests.helpers import make_report, ports_section

POLICY = """
[defaults]
allowed_ports = ["tcp/22"]

[groups.web]

[hosts."web-01"]
unit = "parks"
groups = ["web"]

[hosts."web-02"]
unit = "water"

[units.parks]
title = "Parks and Gardens"
emails = ["it@parks.example.org"]

[due_days]
high = 7

[verification]
reports = 3

[response]
waiver_warning_days = 5
"""

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
OPEN = {"ports": ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8081))}
FIXED = {"ports": ports_section(("tcp", "0.0.0.0", 22))}


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[CollectorService]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    svc = CollectorService(
        CollectorSettings(
            database_url=database_url, policy=policy, enroll_secret="s3cret", data_dir=tmp_path
        )
    )
    svc.start()
    for host in ("web-01", "web-02"):
        svc.identity.enroll(host, "s3cret")
    yield svc
    svc.stop()


class Host:
    """Reports of one host, one sequence after another, minutes apart from T0."""

    def __init__(self, svc: CollectorService, host_id: str) -> None:
        self.svc = svc
        self.host_id = host_id
        self.sequence = 0

    def report(self, sections: dict[str, Any], minutes: float) -> None:
        self.sequence += 1
        at = T0 + timedelta(minutes=minutes)
        body = make_report(self.host_id, self.sequence, sections, collected_at=at)
        self.svc.ingestor.ingest(Report.model_validate(body), self.host_id, at)


def findings(svc: CollectorService, host_id: str = "web-01") -> list[FindingRow]:
    with svc.store.read() as conn:
        return svc.store.findings.query(conn, host_ids=[host_id], rule="allowed_ports")


def history(svc: CollectorService, finding_id: int) -> list[EventRow]:
    with svc.store.read() as conn:
        return svc.store.events.for_finding(conn, finding_id)


def kinds(svc: CollectorService, **filters: Any) -> list[str]:
    with svc.store.read() as conn:
        return [e.kind for e in svc.store.events.query(conn, **filters)]


def waiver(**changes: Any) -> NewWaiver:
    values: dict[str, Any] = {
        "source": "api",
        "name": None,
        "scope": "host",
        "target": "web-01",
        "rule": "allowed_ports",
        "pattern": "tcp/80*",
        "reason": "vendor appliance, replaced in spring",
        "owner": "parks IT",
        "created_by": "office",
        "created_at": T0 + timedelta(minutes=10),
        "expires_at": T0 + timedelta(days=60),
    }
    return NewWaiver(**(values | changes))


class TestLifecycle:
    def test_an_opened_finding_is_an_event_with_its_unit_and_due_date(
        self, service: CollectorService
    ) -> None:
        """Opening writes `opened` with host, unit, rule, severity, subject and the due date
        ``[due_days]`` gives its severity."""
        Host(service, "web-01").report(OPEN, 0)
        (row,) = findings(service)
        assert row.state == "open"
        assert row.due_at == T0 + timedelta(days=7)
        (opened,) = history(service, row.id)
        assert (opened.kind, opened.unit, opened.host_id) == ("opened", "parks", "web-01")
        assert (opened.rule, opened.severity, opened.subject) == (
            "allowed_ports",
            "high",
            "tcp/8081",
        )
        assert opened.detail["due_at"] == (T0 + timedelta(days=7)).isoformat()
        assert "tcp/8081" in opened.detail["detail"]

    def test_a_fix_is_verified_after_the_configured_number_of_clean_reports(
        self, service: CollectorService
    ) -> None:
        """resolved on the first report without it, verified on the third (reports = 3)."""
        host = Host(service, "web-01")
        host.report(OPEN, 0)
        host.report(FIXED, 5)
        (row,) = findings(service)
        assert (row.state, row.resolved_at) == ("resolved", T0 + timedelta(minutes=5))
        host.report(FIXED, 10)
        assert findings(service)[0].state == "resolved"
        host.report(FIXED, 15)
        (row,) = findings(service)
        assert (row.state, row.verified_at) == ("verified", T0 + timedelta(minutes=15))
        assert [e.kind for e in history(service, row.id)] == ["opened", "resolved", "verified"]

    def test_a_problem_back_before_verification_reopens_the_same_case(
        self, service: CollectorService
    ) -> None:
        """Same finding id, state open again, a `reopened` event; after verification a new case."""
        host = Host(service, "web-01")
        host.report(OPEN, 0)
        (first,) = findings(service)
        host.report(FIXED, 5)
        host.report(OPEN, 10)
        (again,) = findings(service)
        assert again.id == first.id
        assert (again.state, again.resolved_at, again.reopened) == ("open", None, 1)
        assert [e.kind for e in history(service, first.id)] == ["opened", "resolved", "reopened"]
        for minutes in (15, 20, 25):
            host.report(FIXED, minutes)
        host.report(OPEN, 30)
        rows = findings(service)
        assert [r.state for r in rows] == ["verified", "open"]
        assert rows[1].id != first.id

    def test_a_policy_change_that_opens_many_findings_writes_their_events_in_one_insert(
        self, service: CollectorService
    ) -> None:
        """Per batch, one INSERT of findings and one of events, whatever their number."""
        ports = [("tcp", "0.0.0.0", 10000 + n) for n in range(200)]
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        event.listen(service.engine, "before_cursor_execute", record)
        try:
            Host(service, "web-01").report({"ports": ports_section(*ports)}, 0)
        finally:
            event.remove(service.engine, "before_cursor_execute", record)
        assert kinds(service, kind="opened") == ["opened"] * 200
        inserts = [s for s in sent if s.lstrip().upper().startswith("INSERT INTO EVENTS")]
        assert len(inserts) == 1


class TestPeople:
    def test_acknowledging_records_who_when_note_and_due_date(
        self, service: CollectorService
    ) -> None:
        """`acknowledged` and `due_changed` events, with the actor; the row says the same."""
        Host(service, "web-01").report(OPEN, 0)
        (row,) = findings(service)
        due = T0 + timedelta(days=3)
        now = T0 + timedelta(hours=1)
        service.casework.acknowledge(row.id, "parks-oncall", "closing it Monday", due, now=now)
        (row,) = findings(service)
        assert (row.state, row.acknowledged_by, row.acknowledged_at) == (
            "acknowledged",
            "parks-oncall",
            now,
        )
        assert (row.note, row.due_at) == ("closing it Monday", due)
        events = history(service, row.id)
        assert [(e.kind, e.actor) for e in events[1:]] == [
            ("acknowledged", "parks-oncall"),
            ("due_changed", "parks-oncall"),
        ]
        assert events[1].detail["note"] == "closing it Monday"
        assert events[2].detail["previous_due_at"] == (T0 + timedelta(days=7)).isoformat()

    def test_a_unit_limited_caller_cannot_reach_another_units_finding(
        self, service: CollectorService
    ) -> None:
        """As if it did not exist: no finding of another unit is acknowledged."""
        Host(service, "web-01").report(OPEN, 0)
        (row,) = findings(service)
        with pytest.raises(NoSuchFinding):
            service.casework.acknowledge(row.id, "water-oncall", None, None, unit="water")
        assert findings(service)[0].state == "open"

    def test_a_resolved_finding_cannot_be_acknowledged(self, service: CollectorService) -> None:
        """The refusal names the state; nothing is written."""
        host = Host(service, "web-01")
        host.report(OPEN, 0)
        host.report(FIXED, 5)
        (row,) = findings(service)
        with pytest.raises(FindingClosed, match="resolved"):
            service.casework.acknowledge(row.id, "someone", "too late", None)
        assert [e.kind for e in history(service, row.id)] == ["opened", "resolved"]


class TestWaivers:
    def test_a_waiver_waives_what_it_covers_and_the_host_stops_counting_it(
        self, service: CollectorService
    ) -> None:
        """`waiver_created`, then `waived` for the open finding it covers; open counts drop."""
        Host(service, "web-01").report(OPEN, 0)
        made, count = service.casework.create_waiver(waiver())
        assert count == 1
        (row,) = findings(service)
        assert row.waiver_id == made.id
        with service.store.read() as conn:
            assert service.store.findings.open_counts(conn) == {}
        assert [e.kind for e in history(service, row.id)] == ["opened", "waived"]
        assert kinds(service, kind="waiver_created") == ["waiver_created"]

    def test_a_waiver_covers_only_its_scope_rule_and_pattern(
        self, service: CollectorService
    ) -> None:
        """A group waiver reaches the group's hosts only; a pattern that does not match waives
        nothing."""
        Host(service, "web-01").report(OPEN, 0)
        Host(service, "web-02").report(OPEN, 0)
        service.casework.create_waiver(waiver(scope="group", target="web", pattern="tcp/80??"))
        assert findings(service, "web-01")[0].waived
        assert not findings(service, "web-02")[0].waived
        _, count = service.casework.create_waiver(
            waiver(scope="unit", target="water", pattern="udp/*")
        )
        assert count == 0

    def test_a_finding_that_opens_under_a_waiver_opens_waived(
        self, service: CollectorService
    ) -> None:
        """`opened` then `waived`, and the opened event names the waiver."""
        made, _ = service.casework.create_waiver(waiver(created_at=T0 - timedelta(days=1)))
        Host(service, "web-01").report(OPEN, 0)
        (row,) = findings(service)
        events = history(service, row.id)
        assert [e.kind for e in events] == ["opened", "waived"]
        assert events[0].detail["waiver_id"] == made.id

    def test_revoking_a_waiver_makes_its_findings_active_again(
        self, service: CollectorService
    ) -> None:
        """`waiver_revoked` with the reason, then `unwaived`."""
        Host(service, "web-01").report(OPEN, 0)
        made, _ = service.casework.create_waiver(waiver())
        service.casework.revoke_waiver(made.id, "office", "appliance replaced early")
        (row,) = findings(service)
        assert row.waiver_id is None
        assert [e.kind for e in history(service, row.id)] == ["opened", "waived", "unwaived"]
        with service.store.read() as conn:
            (revoked,) = service.store.events.query(conn, kind="waiver_revoked")
        assert revoked.detail["reason_ended"] == "appliance replaced early"
        assert revoked.subject == "tcp/80*"

    def test_a_waiver_in_the_past_or_for_an_unknown_rule_is_refused(
        self, service: CollectorService
    ) -> None:
        """The refusal says what was wrong."""
        with pytest.raises(InvalidWaiver, match="future"):
            service.casework.create_waiver(waiver(expires_at=T0))
        with pytest.raises(InvalidWaiver, match="no rule 'nope'"):
            service.casework.create_waiver(waiver(rule="nope"))


class TestTime:
    def test_overdue_is_announced_once(self, service: CollectorService) -> None:
        """Past its due date an open finding gets one `overdue` event, however many rounds."""
        Host(service, "web-01").report(OPEN, 0)
        assert service.casework.tick(T0 + timedelta(days=6)).overdue == 0
        assert service.casework.tick(T0 + timedelta(days=8)).overdue == 1
        assert service.casework.tick(T0 + timedelta(days=9)).overdue == 0
        (row,) = findings(service)
        assert row.is_overdue(T0 + timedelta(days=9))
        assert kinds(service, kind="overdue") == ["overdue"]

    def test_a_waived_finding_is_never_overdue(self, service: CollectorService) -> None:
        """Waived findings do not count: no overdue event while the waiver holds."""
        Host(service, "web-01").report(OPEN, 0)
        service.casework.create_waiver(waiver())
        assert service.casework.tick(T0 + timedelta(days=8)).overdue == 0

    def test_a_waiver_warns_before_it_expires_then_expires_once(
        self, service: CollectorService
    ) -> None:
        """`waiver_expiring` once within the warning period, `waiver_expired` once, then the
        finding is active again (`unwaived`) and, past due, `overdue`."""
        Host(service, "web-01").report(OPEN, 0)
        service.casework.create_waiver(waiver(expires_at=T0 + timedelta(days=20)))
        assert service.casework.tick(T0 + timedelta(days=14)).waivers_expiring == 0
        assert service.casework.tick(T0 + timedelta(days=16)).waivers_expiring == 1
        assert service.casework.tick(T0 + timedelta(days=17)).waivers_expiring == 0
        counts = service.casework.tick(T0 + timedelta(days=20, minutes=1))
        assert (counts.waivers_expired, counts.overdue) == (1, 1)
        assert service.casework.tick(T0 + timedelta(days=21)).waivers_expired == 0
        (row,) = findings(service)
        assert [e.kind for e in history(service, row.id)] == [
            "opened",
            "waived",
            "unwaived",
            "overdue",
        ]

    def test_policy_waivers_are_kept_in_step_with_the_file(
        self, service: CollectorService, tmp_path: Path
    ) -> None:
        """A waiver in the file is created (actor policy) and waives; gone from the file, revoked."""
        Host(service, "web-01").report(OPEN, 0)
        entry = """
[waivers.vendor-port]
host = "web-01"
rule = "allowed_ports"
subject = "tcp/8081"
reason = "vendor appliance"
owner = "parks IT"
expires = 2099-01-01
"""
        path = tmp_path / "policy.toml"
        path.write_text(POLICY + entry)
        assert service.housekeeper.follow_policy()
        assert service.casework.tick().policy_waivers_created == 1
        assert service.casework.tick().policy_waivers_created == 0
        assert findings(service)[0].waived
        path.write_text(POLICY + "\n")
        assert service.housekeeper.follow_policy()
        assert service.casework.tick().policy_waivers_revoked == 1
        assert not findings(service)[0].waived
        with service.store.read() as conn:
            created = service.store.events.query(conn, kind="waiver_created")
        assert [(e.actor, e.detail["name"], e.unit) for e in created] == [
            ("policy", "vendor-port", "parks")
        ]


class TestSilentHosts:
    def test_a_host_that_never_reports_is_announced_once_after_its_grace(
        self, service: CollectorService
    ) -> None:
        """Enrolled, no report: nothing within ``max_report_age`` of enrolling, then one
        `host_never_reported` with its unit."""
        now = datetime.now(UTC)
        service.casework.tick(now)
        assert kinds(service, kind="host_never_reported") == []
        service.casework.tick(now + timedelta(minutes=16))
        service.casework.tick(now + timedelta(minutes=17))
        with service.store.read() as conn:
            events = service.store.events.query(conn, kind="host_never_reported")
        assert sorted((e.host_id, e.unit) for e in events) == [
            ("web-01", "parks"),
            ("web-02", "water"),
        ]

    def test_a_stale_host_is_announced_once_and_its_return_once(
        self, service: CollectorService
    ) -> None:
        """`host_stale` once while silent, `host_back` once when it reports again."""
        host = Host(service, "web-01")
        host.report(FIXED, 0)
        service.casework.tick(T0 + timedelta(minutes=10))
        assert kinds(service, host_id="web-01") == []
        service.casework.tick(T0 + timedelta(minutes=20))
        service.casework.tick(T0 + timedelta(minutes=21))
        assert kinds(service, host_id="web-01") == ["host_stale"]
        host.report(FIXED, 25)
        service.casework.tick(T0 + timedelta(minutes=26))
        service.casework.tick(T0 + timedelta(minutes=27))
        assert kinds(service, host_id="web-01") == ["host_stale", "host_back"]

    def test_hosts_that_report_are_not_read(
        self, service: CollectorService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The watch reads the hosts quiet for longer than the shortest age the policy allows
        (and those never reported), not every host."""
        Host(service, "web-01").report(FIXED, 0)
        read = spy_on_reads(service, monkeypatch)
        service.casework.tick(T0 + timedelta(minutes=5))
        assert sorted(read) == ["web-02"]
        read.clear()
        service.casework.tick(T0 + timedelta(minutes=20))
        assert sorted(read) == ["web-01", "web-02"]
        assert kinds(service, host_id="web-01") == ["host_stale"]

    def test_hosts_announced_silent_are_not_read_again_until_they_report(
        self, service: CollectorService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Between full rounds, a host whose silence was announced is not read again while it
        stays silent; its report brings it back into the next round, which announces its
        return; a full round reads it again."""
        host = Host(service, "web-01")
        host.report(FIXED, 0)
        service.casework.tick(T0 + timedelta(minutes=1))  # the process's first: a full round
        service.casework.tick(T0 + timedelta(minutes=20))
        assert kinds(service, host_id="web-01") == ["host_stale"]
        read = spy_on_reads(service, monkeypatch)
        service.casework.tick(T0 + timedelta(minutes=21))
        service.casework.tick(T0 + timedelta(minutes=22))
        assert "web-01" not in read
        host.report(FIXED, 23)
        service.casework.tick(T0 + timedelta(minutes=24))
        assert "web-01" in read
        assert kinds(service, host_id="web-01") == ["host_stale", "host_back"]
        read.clear()
        service.casework.tick(T0 + timedelta(minutes=60))  # past FULL_ROUND_EVERY: full
        assert "web-01" in read
        assert kinds(service, host_id="web-01") == ["host_stale", "host_back", "host_stale"]


def spy_on_reads(service: CollectorService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts whose last report the silent-host watch reads from now on, as it reads them."""
    read: list[str] = []
    hosts = service.store.hosts
    heard_before, heard_of = hosts.heard_before, hosts.heard_of

    def before(*args: Any, **kwargs: Any) -> Any:
        found = heard_before(*args, **kwargs)
        read.extend(found)
        return found

    def of(*args: Any, **kwargs: Any) -> Any:
        found = heard_of(*args, **kwargs)
        read.extend(found)
        return found

    monkeypatch.setattr(hosts, "heard_before", before)
    monkeypatch.setattr(hosts, "heard_of", of)
    return read


class TestFeedback:
    def test_a_unit_report_holds_open_overdue_fixed_verified_and_waived(
        self, service: CollectorService
    ) -> None:
        """Each finding in the section its case puts it in, for the unit's hosts only."""
        host = Host(service, "web-01")
        host.report({"ports": ports_section(("tcp", "0.0.0.0", 8081), ("tcp", "0.0.0.0", 9090))}, 0)
        Host(service, "web-02").report(OPEN, 0)
        fixed_port = next(f for f in findings(service) if f.key == "tcp/9090")
        host.report(OPEN, 5)  # 9090 closed: resolved
        for minutes in (10, 15):
            host.report(OPEN, minutes)  # verified at the third clean report
        made, _ = service.casework.create_waiver(
            waiver(pattern="tcp/8081", created_at=T0 + timedelta(minutes=20))
        )
        feedback = Feedback(service.store, service.policy.current)
        report = feedback.unit("parks", T0, T0 + timedelta(days=9))
        assert [h.host_id for h in report.hosts] == ["web-01"]
        assert report.open == []
        assert [f.subject for f in report.waived] == ["tcp/8081"]
        assert [f.id for f in report.fixed] == [fixed_port.id]
        assert [f.id for f in report.verified] == [fixed_port.id]
        assert [(w.id, w.findings) for w in report.waivers] == [(made.id, 1)]
        service.casework.revoke_waiver(made.id, "office", None, T0 + timedelta(minutes=30))
        report = feedback.unit("parks", T0, T0 + timedelta(days=9))
        assert [(f.subject, f.overdue, f.age_days) for f in report.overdue] == [
            ("tcp/8081", True, 9.0)
        ]
        assert report.open_by_severity == {"high": 1}

    def test_the_fleet_summary_ranks_units_by_overdue_critical_then_overdue(
        self, service: CollectorService
    ) -> None:
        """water (one overdue) above parks (none); opened and fixed counted per period."""
        Host(service, "web-01").report(FIXED, 0)
        Host(service, "web-02").report(OPEN, 0)
        feedback = Feedback(service.store, service.policy.current)
        summary = feedback.fleet(T0 - timedelta(days=1), T0 + timedelta(days=8))
        assert [(u.unit, u.overdue, u.opened, u.previous_opened) for u in summary.units] == [
            ("water", 1, 1, 0),
            ("parks", 0, 0, 0),
        ]
        later = feedback.fleet(T0 + timedelta(days=8), T0 + timedelta(days=17))
        water = later.units[0]
        assert (water.opened, water.previous_opened, water.open_at_start) == (0, 1, 1)
