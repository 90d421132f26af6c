"""Rate limits across collector processes on one database: each limit holds for the fleet,
not once per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.collector.auth.identity import Principal
from fleetwatch.collector.refusals import (
    AdminWriteRateLimited,
    EnrollRateLimited,
    RotationRateLimited,
)
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report
from tests.helpers import make_report

SECRET = "enroll-secret-for-shared-limits"

Pair = Callable[..., tuple[CollectorService, CollectorService]]


@pytest.fixture
def pair(database_url: str, tmp_path: Path) -> Iterator[Pair]:
    """Two collector processes' worth of services on one database, with the settings asked."""
    started: list[CollectorService] = []

    def make(**settings: Any) -> tuple[CollectorService, CollectorService]:
        config = CollectorSettings(
            database_url=database_url, enroll_secret=SECRET, data_dir=tmp_path, **settings
        )
        services = CollectorService(config), CollectorService(config)
        for service in services:
            service.start()
            started.append(service)
        return services

    yield make
    for service in started:
        service.stop()


def _report(service: CollectorService, host_id: str, sequence: int) -> int | None:
    """As the report door does: the rate check, then the report stored; the wait if refused."""
    retry = service.host_limiter.check(host_id)
    if retry is None:
        service.ingestor.ingest(Report.model_validate(make_report(host_id, sequence)), host_id)
    return retry


class TestReportRate:
    def test_a_host_alternating_between_processes_gets_the_fleet_burst(self, pair: Pair) -> None:
        """host_burst reports (and the one in flight when the bucket ran out), not twice as
        many; the refusals say how long to wait."""
        one, other = pair(host_rate=0.01, host_burst=4)
        one.identity.enroll("web-01", SECRET)
        answers = [_report((one, other)[n % 2], "web-01", n + 1) for n in range(12)]
        let_in = [a for a in answers if a is None]
        assert len(let_in) == 5
        assert all(a is not None and a >= 1 for a in answers if a is not None)

    def test_a_process_learns_the_bucket_with_the_token(self, pair: Pair) -> None:
        """A process that never saw the host refuses its first report when the fleet's bucket
        is empty: the token check reads the bucket from the host's row."""
        one, other = pair(host_rate=0.01, host_burst=3)
        token = one.identity.enroll("web-01", SECRET)
        for n in range(3):
            assert _report(one, "web-01", n + 1) is None
        assert other.identity.host_for(token) == "web-01"
        retry = other.host_limiter.check("web-01")
        assert retry is not None
        assert retry >= 1

    def test_the_bucket_is_kept_on_the_host_row(self, pair: Pair) -> None:
        """A process that never saw the host learns its bucket from the row the writer keeps."""
        one, other = pair(host_rate=0.01, host_burst=3)
        one.identity.enroll("web-01", SECRET)
        for n in range(3):
            assert _report(one, "web-01", n + 1) is None
        with other.store.read() as conn:
            host = other.store.hosts.get(conn, "web-01")
        assert host is not None
        assert host.report_bucket is not None
        assert host.report_bucket.tokens < 1


class TestRareLimits:
    def test_enrollment_attempts_from_one_address_count_across_processes(self, pair: Pair) -> None:
        """enroll_burst attempts from an address in all, whichever process takes them."""
        one, other = pair(enroll_rate=0.01, enroll_burst=3)
        for n in range(3):
            (one, other)[n % 2].identity.count_enrollment("192.0.2.7")
        for service in (one, other):
            with pytest.raises(EnrollRateLimited) as refused:
                service.identity.count_enrollment("192.0.2.7")
            assert refused.value.retry_after >= 1
        one.identity.count_enrollment("192.0.2.8")  # another address has its own budget

    def test_rotations_count_across_processes(self, pair: Pair) -> None:
        """rotate_burst rotations of a host in all, whichever process takes them."""
        one, other = pair(rotate_rate=0.01, rotate_burst=2)
        token = one.identity.enroll("web-01", SECRET)
        one.identity.rotate("web-01", token)
        other.identity.rotate("web-01", token)
        with pytest.raises(RotationRateLimited):
            one.identity.rotate("web-01", token)
        with pytest.raises(RotationRateLimited):
            other.identity.rotate("web-01", token)

    def test_admin_writes_count_across_processes(self, pair: Pair) -> None:
        """admin_write_burst writes per API token in all, whichever process takes them."""
        one, other = pair(admin_write_rate=0.01, admin_write_burst=2)
        alice = Principal(name="alice", kind="admin", token_id=1)
        one.identity.count_admin_write(alice)
        other.identity.count_admin_write(alice)
        with pytest.raises(AdminWriteRateLimited):
            other.identity.count_admin_write(alice)

    def test_unused_buckets_are_pruned(self, pair: Pair) -> None:
        """Housekeeping's pruning drops buckets nobody used for a day (full again by then)."""
        one, _ = pair()
        one.identity.count_enrollment("192.0.2.7")
        with one.store.write() as conn:
            assert one.store.rate_buckets.get(conn, "enroll:192.0.2.7") is not None
            assert one.store.rate_buckets.prune(conn, untouched_since=0) == 0
        one.prune()
        with one.store.write() as conn:
            assert one.store.rate_buckets.get(conn, "enroll:192.0.2.7") is not None
            assert one.store.rate_buckets.prune(conn, untouched_since=10**12) == 1
