"""Back-pressure: a collector that cannot keep up answers at once, with a spread Retry-After."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from fleetwatch.collector.ingest.queue import IngestQueue
from fleetwatch.collector.refusals import Overloaded
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report, ReportAck
from tests.helpers import make_report

HOSTS = 40


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CollectorService]:
    svc = CollectorService(
        CollectorSettings(
            database_url=f"sqlite:///{tmp_path / 'fleetwatch.db'}",
            enroll_secret="s3cret",
            data_dir=tmp_path,
        )
    )
    svc.start()
    yield svc
    svc.stop()


def report(host: int, sequence: int) -> Report:
    return Report.model_validate(make_report(f"host-{host:03d}", sequence))


class TestBackPressure:
    def test_a_stalled_writer_refuses_at_once_and_loses_nothing_it_took(
        self, service: CollectorService, tmp_path: Path
    ) -> None:
        """Past max_wait the queue refuses with a Retry-After in range; what it took is stored."""
        queue = IngestQueue(service.ingestor, max_wait=60, retry_after_max=30, rng=random.Random(7))
        queue.start()
        try:
            for host in range(HOSTS):
                service.identity.enroll(f"host-{host:03d}", "s3cret")
                queue.submit(report(host, 1), f"host-{host:03d}").result(timeout=30)
            assert queue.report_cost is not None
            # a few reports' worth of wait, whatever this machine's speed today
            queue.max_wait = queue.report_cost * 4
            # Another process holds the database: the writer stalls, as on a slow disk.
            blocker = sqlite3.connect(tmp_path / "fleetwatch.db")
            blocker.execute("BEGIN EXCLUSIVE")
            taken: list[Future[ReportAck]] = []
            refusals: list[Overloaded] = []
            for host in range(HOSTS):
                try:
                    taken.append(queue.submit(report(host, 2), f"host-{host:03d}"))
                except Overloaded as exc:
                    refusals.append(exc)
            blocker.rollback()
            blocker.close()
            assert refusals, "a stalled writer must refuse before the backlog passes max_wait"
            assert taken, "the first reports are taken while the wait is short"
            for refusal in refusals:
                assert refusal.retry_after is not None
                assert queue.max_wait <= refusal.retry_after <= 30
            assert len({r.retry_after for r in refusals}) > 1, "retries are spread"
            assert [f.result(timeout=60).status for f in taken] == ["stored"] * len(taken)
        finally:
            queue.stop()

    def test_the_wait_estimate_follows_the_backlog(self, service: CollectorService) -> None:
        """The expected wait is the backlog ahead times the measured cost of a report."""
        queue = IngestQueue(service.ingestor, max_wait=1.0)
        assert queue.expected_wait() == 0.0  # nothing measured: no refusal on a guess
        queue.report_cost = 0.01
        assert queue.expected_wait() == 0.0  # nothing ahead: never refused
