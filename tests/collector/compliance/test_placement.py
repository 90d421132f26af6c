"""Hosts placed by the policy for the dashboard, and the fleet's snapshots, kept by the
housekeeper (on SQLite always, on PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleetwatch.collector.compliance.placement import placements_of
from fleetwatch.collector.compliance.policy import Policy
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.tables import fleet_snapshots, host_placements

POLICY = """
[defaults]
max_report_age = 900

[groups.slow]
max_report_age = 7200

[groups.web]

[hosts."a-01"]
unit = "parks"
groups = ["web", "slow"]

[hosts."b-01"]
unit = "water"
groups = ["slow", "web"]
max_report_age = 60

[hosts."c-01"]
groups = ["web"]
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
            policy_check_interval=3600,  # rounds are run by the tests, not the thread
        )
    )
    svc.start()
    yield svc
    svc.stop()


def placed(svc: CollectorService) -> dict[str, tuple[str | None, str, int, int]]:
    with svc.store.read() as conn:
        return {
            r.host_id: (r.unit, r.groups, r.max_report_age, r.listed)
            for r in conn.execute(select(host_placements))
        }


def snapshot_rows(svc: CollectorService, kind: str) -> int:
    with svc.store.read() as conn:
        return int(
            conn.execute(select(func.count()).where(fleet_snapshots.c.kind == kind)).scalar_one()
        )


class TestPlacementsOf:
    def test_ages_resolve_as_the_policy_resolves_them(self) -> None:
        """Each host's report age is the one Policy.for_host gives its baseline."""
        policy = Policy.from_text(POLICY)
        for p in placements_of(policy):
            assert p.max_report_age == policy.for_host(p.host_id).baseline.max_report_age
            assert p.unit == policy.for_host(p.host_id).unit
        assert {p.host_id: p.max_report_age for p in placements_of(policy)} == {
            "a-01": 7200,
            "b-01": 60,
            "c-01": 900,
        }


class TestReplace:
    def test_only_rows_that_differ_are_written(self, service: CollectorService) -> None:
        """The service places the policy's hosts as it starts; placing them again by the same
        policy writes nothing; a host moved to another unit is one row."""
        policy = service.policy.current
        assert sorted(placed(service)) == ["a-01", "b-01", "c-01"]
        with service.store.write() as conn:
            again = service.store.placements.replace(conn, placements_of(policy), 900)
        moved = Policy.from_text(POLICY.replace('unit = "parks"', 'unit = "roads"'))
        with service.store.write() as conn:
            one = service.store.placements.replace(conn, placements_of(moved), 900)
        assert (again, one) == (0, 1)
        assert placed(service)["a-01"][0] == "roads"


class TestHousekeeping:
    def test_a_round_places_hosts_and_records_snapshots(self, service: CollectorService) -> None:
        """The lease holder's round places listed and enrolled hosts (an enrolled host the
        policy does not list keeps its enrollment unit) and records live, hour and day."""
        service.identity.enroll("z-01", "s3cret")
        service.housekeeper.round()
        assert placed(service) == {
            "a-01": ("parks", " web slow ", 7200, 1),
            "b-01": ("water", " slow web ", 60, 1),
            "c-01": (None, " web ", 900, 1),
            "z-01": (None, " ", 900, 0),
        }
        assert [snapshot_rows(service, k) for k in ("live", "hour", "day")] == [3, 3, 3]

    def test_a_second_snapshot_in_the_hour_rewrites_live_only(
        self, service: CollectorService
    ) -> None:
        """Within one hour, the live snapshot is rewritten; hour and day keep their first."""
        now = datetime.now(UTC).replace(minute=5)
        assert service.fleet_recorder.refresh(now) == ["live", "hour", "day"]
        assert service.fleet_recorder.refresh(now + timedelta(minutes=20)) == ["live"]
        assert [snapshot_rows(service, k) for k in ("live", "hour", "day")] == [3, 3, 3]

    def test_hourly_snapshots_are_kept_a_week(self, service: CollectorService) -> None:
        """Hourly snapshots older than seven days are dropped; daily ones stay."""
        now = datetime.now(UTC)
        service.fleet_recorder.refresh(now - timedelta(days=8))
        service.fleet_recorder.refresh(now)
        with service.store.read() as conn:
            hours = service.store.snapshots.totals(conn, "hour", now - timedelta(days=30))
            days = service.store.snapshots.totals(conn, "day", now - timedelta(days=30))
        assert len(hours) == 1
        assert len(days) == 2

    def test_a_policy_change_moves_hosts_in_the_same_round(
        self, service: CollectorService, tmp_path: Path
    ) -> None:
        """When the policy moves a host to another unit, the round that notices the change
        places it anew (a unit reader's lists follow at once)."""
        service.housekeeper.round()
        (tmp_path / "policy.toml").write_text(POLICY.replace('unit = "parks"', 'unit = "water"'))
        service.housekeeper.round()
        assert placed(service)["a-01"][0] == "water"

    def test_trends_sum_the_units(self, service: CollectorService) -> None:
        """The trend of the fleet is the sum of its units at each moment."""
        service.identity.enroll("z-01", "s3cret")
        service.fleet_recorder.refresh()
        with service.store.read() as conn:
            (fleet,) = service.store.snapshots.totals(
                conn, "hour", datetime.now(UTC) - timedelta(hours=2)
            )
            (units,) = service.store.snapshots.series(
                conn, "hour", datetime.now(UTC) - timedelta(hours=2)
            )
        assert fleet.units[0].hosts == sum(u.hosts for u in units.units) == 4
        assert fleet.units[0].by_status["never_reported"] == 4
