"""Evaluating again after a policy change: only the hosts it changes, once, while reports keep
coming. SQLite always, PostgreSQL when configured."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleetwatch.collector.compliance.findings import Compliance
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.compliance.reevaluation import evaluated_against
from fleetwatch.collector.ingest.writer import Ingestor
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.tables import findings, hosts
from fleetwatch.schema import Report
from tests.helpers import full, make_report, ports_section, section_data

POLICY = """
[defaults]
allowed_ports = ["tcp/22"]

[groups.web]
allowed_ports = ["tcp/22"]

[groups.db]
allowed_ports = ["tcp/22"]

[hosts."web-01"]
groups = ["web"]

[hosts."web-02"]
groups = ["web"]

[hosts."db-01"]
unit = "water"
groups = ["db"]
"""
WEB_ALLOWS_80 = POLICY.replace(
    '[groups.web]\nallowed_ports = ["tcp/22"]', '[groups.web]\nallowed_ports = ["tcp/22", "tcp/80"]'
)
HOSTS = ("web-01", "web-02", "db-01")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def make_service(
    database_url: str, tmp_path: Path, policy_file: Path
) -> Iterator[Callable[[], CollectorService]]:
    made: list[CollectorService] = []

    def make() -> CollectorService:
        svc = CollectorService(
            CollectorSettings(
                database_url=database_url,
                policy=policy_file,
                enroll_secret="s3cret",
                data_dir=tmp_path,
                policy_check_interval=3600,  # rounds are run by the tests, not the thread
            )
        )
        svc.start()
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()


@pytest.fixture
def service(make_service: Callable[[], CollectorService]) -> CollectorService:
    svc = make_service()
    for host_id in HOSTS:
        svc.identity.enroll(host_id, "s3cret")
        send(svc, host_id, 1)
    return svc


def body(host_id: str, sequence: int) -> dict[str, Any]:
    """A report listening on 22 and 80 (80 is a finding unless the policy allows it)."""
    sections = {name: full(name, section_data(name)) for name in ("system", "packages")}
    sections["ports"] = ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 80))
    return make_report(host_id, sequence, sections)


def send(svc: CollectorService | Ingestor, host_id: str, sequence: int) -> None:
    ingestor = svc.ingestor if isinstance(svc, CollectorService) else svc
    ingestor.ingest(Report.model_validate(body(host_id, sequence)), host_id)


def change_policy(svc: CollectorService, policy_file: Path, text: str) -> None:
    policy_file.write_text(text)
    assert svc.policy.reload_if_changed(), svc.policy.error


def port_80(svc: CollectorService) -> dict[str, str]:
    """Each host's finding on port 80, by state."""
    with svc.store.read() as conn:
        rows = conn.execute(
            select(findings.c.host_id, findings.c.state).where(
                findings.c.rule == "allowed_ports", findings.c.key.like("tcp/80%")
            )
        )
        return {row.host_id: row.state for row in rows}


def port_80_ids(svc: CollectorService) -> dict[str, int]:
    """Each host's finding on port 80, by id."""
    with svc.store.read() as conn:
        rows = conn.execute(
            select(findings.c.host_id, findings.c.id).where(findings.c.key.like("tcp/80%"))
        )
        return {row.host_id: row.id for row in rows}


def stored(svc: CollectorService, host_id: str) -> tuple[list[Any], str | None]:
    """A host's findings rows, every column, and what it was last evaluated against."""
    with svc.store.read() as conn:
        rows = list(
            conn.execute(
                select(findings).where(findings.c.host_id == host_id).order_by(findings.c.id)
            )
        )
        digest = conn.execute(
            select(hosts.c.baseline_digest).where(hosts.c.host_id == host_id)
        ).scalar_one()
    return rows, digest


class TestIncrementalReevaluation:
    def test_a_report_records_what_it_was_evaluated_against(
        self, service: CollectorService
    ) -> None:
        """After a report, the host row names the baseline, unit and groups it was held to."""
        policy = service.policy.current
        for host_id in HOSTS:
            assert stored(service, host_id)[1] == evaluated_against(
                policy.for_host(host_id), service.ingestor.generation
            )
        assert stored(service, "web-01")[1] == stored(service, "web-02")[1]
        assert stored(service, "web-01")[1] != stored(service, "db-01")[1]

    def test_a_groups_change_evaluates_only_its_hosts(
        self, service: CollectorService, policy_file: Path
    ) -> None:
        """Allowing a port for one group evaluates that group's hosts again; the other
        host's findings rows and digest are not written."""
        assert port_80(service) == dict.fromkeys(HOSTS, "open")
        untouched = stored(service, "db-01")
        change_policy(service, policy_file, WEB_ALLOWS_80)
        assert service.ingestor.reevaluate() == 2
        assert port_80(service) == {"web-01": "resolved", "web-02": "resolved", "db-01": "open"}
        assert stored(service, "db-01") == untouched
        assert service.ingestor.reevaluate() == 0  # done once

    def test_a_change_back_evaluates_the_same_hosts_again(
        self, service: CollectorService, policy_file: Path
    ) -> None:
        """Going back to the first policy reopens the same cases of the same hosts."""
        ids = port_80_ids(service)
        change_policy(service, policy_file, WEB_ALLOWS_80)
        service.ingestor.reevaluate()
        untouched = stored(service, "db-01")
        change_policy(service, policy_file, POLICY)
        assert service.ingestor.reevaluate() == 2
        assert port_80(service) == dict.fromkeys(HOSTS, "open")
        reopened = port_80_ids(service)
        assert reopened == ids
        assert stored(service, "db-01") == untouched

    def test_a_unit_change_is_a_change_for_the_host(
        self, service: CollectorService, policy_file: Path
    ) -> None:
        """A host moved to another unit is evaluated again (its events and waivers follow the
        unit), though its baseline is the same."""
        change_policy(service, policy_file, POLICY.replace('unit = "water"', 'unit = "parks"'))
        assert service.ingestor.reevaluate() == 1
        assert stored(service, "db-01")[1] == evaluated_against(
            service.policy.current.for_host("db-01"), ""
        )

    def test_a_comment_in_the_policy_evaluates_nothing(
        self, service: CollectorService, policy_file: Path
    ) -> None:
        """A new policy file that resolves every host as before costs no evaluation."""
        before = {h: stored(service, h) for h in HOSTS}
        change_policy(service, policy_file, POLICY + "# reviewed\n")
        assert service.ingestor.reevaluate() == 0
        assert {h: stored(service, h) for h in HOSTS} == before


class TestReportsDuringAReevaluation:
    def test_a_report_taken_mid_pass_keeps_the_new_verdict(
        self, service: CollectorService, policy_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A report evaluated under the new policy between two chunks of the pass ends with
        the new policy's verdict, and is not evaluated a second time."""
        change_policy(service, policy_file, WEB_ALLOWS_80)
        monkeypatch.setattr("fleetwatch.collector.ingest.writer.REEVALUATE_CHUNK", 1)
        chunks: list[list[str]] = []
        original = service.ingestor._reevaluate

        def one_chunk(host_ids: list[str], *args: Any) -> int:
            chunks.append(host_ids)
            if len(chunks) == 1:
                send(service, "web-02", 2)  # a report comes between the first chunk and the next
            return original(host_ids, *args)

        monkeypatch.setattr(service.ingestor, "_reevaluate", one_chunk)
        assert service.ingestor.reevaluate() == 1  # web-01; web-02's report did the rest
        assert sorted(h for (h,) in chunks) == ["web-01", "web-02"]
        assert port_80(service) == {"web-01": "resolved", "web-02": "resolved", "db-01": "open"}

    def test_a_worker_still_on_the_old_policy_is_caught_up_by_the_next_round(
        self, service: CollectorService, policy_file: Path, tmp_path: Path
    ) -> None:
        """A report that a worker evaluates under the old policy after the pass leaves its
        host evaluated against the old baseline; the holder's next round evaluates it again."""
        old = tmp_path / "old-policy.toml"
        old.write_text(POLICY)
        lagging = Ingestor(service.store, PolicySource(old), Compliance(service.store))
        service.housekeeper.round()  # the holder's first round: nothing to catch up on
        policy_file.write_text(WEB_ALLOWS_80)
        service.housekeeper.round()
        assert port_80(service)["web-01"] == "resolved"
        send(lagging, "web-01", 2)
        assert port_80(service)["web-01"] == "open"  # the old policy's verdict, for now
        service.housekeeper.round()
        assert port_80(service)["web-01"] == "resolved"
        evaluated: list[int] = []
        reevaluate = service.housekeeper._reevaluate
        service.housekeeper._reevaluate = lambda: evaluated.append(reevaluate()) or evaluated[-1]
        service.housekeeper.round()
        service.housekeeper.round()
        assert evaluated == [0]  # one check that finds nothing more, then none until a change


class TestRestart:
    def test_a_new_process_evaluates_nothing_when_nothing_changed(
        self, service: CollectorService, make_service: Callable[[], CollectorService]
    ) -> None:
        """The digests are in the database: a collector started on the same policy checks
        them on taking the lease and evaluates no host."""
        before = {h: stored(service, h) for h in HOSTS}
        service.stop()
        again = make_service()
        counted: list[int] = []
        reevaluate = again.housekeeper._reevaluate
        again.housekeeper._reevaluate = lambda: counted.append(reevaluate()) or counted[-1]
        again.housekeeper.round()
        assert counted == [0]
        assert {h: stored(again, h) for h in HOSTS} == before

    def test_a_change_made_while_no_collector_ran_is_caught_up_at_start(
        self,
        service: CollectorService,
        make_service: Callable[[], CollectorService],
        policy_file: Path,
    ) -> None:
        """A policy edited while the collector was down: the next collector evaluates the
        hosts it changes in its first round, and only those."""
        service.stop()
        policy_file.write_text(WEB_ALLOWS_80)
        again = make_service()
        untouched = stored(again, "db-01")
        counted: list[int] = []
        reevaluate = again.housekeeper._reevaluate
        again.housekeeper._reevaluate = lambda: counted.append(reevaluate()) or counted[-1]
        again.housekeeper.round()
        assert counted == [2]
        assert port_80(again) == {"web-01": "resolved", "web-02": "resolved", "db-01": "open"}
        assert stored(again, "db-01") == untouched
