"""Readiness: not ready while writes fail (a full disk, a read-only database), ready again
once one succeeds; a probe when the collector has not written for a while."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DataError, IntegrityError, InternalError, OperationalError

from fleetwatch.collector.ingest.readiness import Readiness, describe, is_write_failure
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.tables import hosts
from fleetwatch.schema import Report
from tests.helpers import make_report

FULL = OperationalError(
    "INSERT INTO blobs (hash, data) VALUES (?, ?)",
    ("ab" * 32, b"what a host sent"),
    Exception("database or disk is full"),
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeDatabase:
    """Pings and probes that succeed, or fail with ``error``."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.probes = 0
        self.ping_error: Exception | None = None
        self.hold = threading.Event()
        self.hold.set()

    def ping(self) -> None:
        if self.ping_error is not None:
            raise self.ping_error

    def probe_write(self) -> None:
        self.probes += 1
        self.hold.wait(10)
        if self.error is not None:
            raise self.error


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def readiness(database: FakeDatabase, clock: Clock) -> Readiness:
    return Readiness(database, probe_after=30, clock=clock)


class TestReadiness:
    def test_the_first_check_probes(self, readiness: Readiness, database: FakeDatabase) -> None:
        """A collector that has written nothing yet finds out by a write of its own."""
        assert readiness.check().ready
        assert readiness.check().ready
        assert database.probes == 1

    def test_a_collector_that_cannot_write_is_not_ready_from_the_start(
        self, readiness: Readiness, database: FakeDatabase
    ) -> None:
        """Started on a read-only database: not ready at the first check, before any report."""
        database.error = OperationalError("INSERT", {}, Exception("attempt to write a readonly"))
        assert readiness.check().reason == "writes fail: attempt to write a readonly"

    def test_a_failed_write_makes_it_not_ready_with_the_databases_words(
        self, readiness: Readiness
    ) -> None:
        """Not ready after a write failed, saying why, without the statement or its data."""
        readiness.failed(FULL)
        ready = readiness.check()
        assert not ready.ready
        assert ready.reason == "writes fail: database or disk is full"
        assert ready.since is not None

    def test_a_write_that_succeeds_makes_it_ready_again(self, readiness: Readiness) -> None:
        """One successful write is enough."""
        readiness.failed(FULL)
        readiness.succeeded()
        assert readiness.check().ready

    @pytest.mark.parametrize(
        "error",
        [
            IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
            DataError("INSERT", {}, Exception("value out of range")),
            OverflowError("date value out of range"),
            ValueError("naive datetime given to the database"),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_a_report_that_cannot_be_stored_is_not_a_failing_database(
        self, readiness: Readiness, error: Exception
    ) -> None:
        """One bad report must not take the collector out of service."""
        readiness.failed(error)
        assert readiness.check().ready

    @pytest.mark.parametrize(
        "error",
        [
            FULL,
            OperationalError("INSERT", {}, Exception("attempt to write a readonly database")),
            InternalError("INSERT", {}, Exception("cannot execute INSERT in a read-only txn")),
        ],
        ids=["full", "sqlite read-only", "postgresql read-only"],
    )
    def test_database_failures_count(self, error: Exception) -> None:
        """A full disk and a read-only database, on either database, are write failures."""
        assert is_write_failure(error)

    def test_an_idle_collector_probes_and_stays_ready(
        self, readiness: Readiness, database: FakeDatabase, clock: Clock
    ) -> None:
        """No write for probe_after seconds: a probe write, which succeeds."""
        readiness.succeeded()
        clock.now += 29
        assert readiness.check().ready
        assert database.probes == 0
        clock.now += 1
        assert readiness.check().ready
        assert database.probes == 1
        assert readiness.check().ready
        assert database.probes == 1  # the probe counts as a write

    def test_a_probe_that_fails_makes_it_not_ready(
        self, readiness: Readiness, database: FakeDatabase, clock: Clock
    ) -> None:
        """Idle, and the probe write fails: not ready, with the database's words."""
        database.error = OperationalError("INSERT", {}, Exception("disk I/O error"))
        clock.now += 31
        assert readiness.check().reason == "writes fail: disk I/O error"

    def test_a_probe_finds_writes_work_again(
        self, readiness: Readiness, database: FakeDatabase, clock: Clock
    ) -> None:
        """After a failure, the first probe that succeeds makes it ready again."""
        readiness.failed(FULL)
        clock.now += 10
        assert not readiness.check().ready
        assert database.probes == 0  # a failure is fresh news: no probe yet
        clock.now += 30
        assert readiness.check().ready
        assert database.probes == 1

    def test_one_probe_at_a_time(
        self, readiness: Readiness, database: FakeDatabase, clock: Clock
    ) -> None:
        """Checks during a probe take the last outcome known instead of probing too."""
        clock.now += 60
        database.hold.clear()
        first = threading.Thread(target=readiness.check)
        first.start()
        while database.probes == 0:
            threading.Event().wait(0.01)
        assert readiness.check().ready
        database.hold.set()
        first.join()
        assert database.probes == 1

    def test_a_database_that_does_not_answer(
        self, readiness: Readiness, database: FakeDatabase
    ) -> None:
        """Not ready while the database does not answer, even right after a good write."""
        readiness.succeeded()
        database.ping_error = OperationalError("SELECT 1", {}, Exception("connection refused"))
        assert readiness.check().reason == "database unavailable: connection refused"

    def test_the_words_leave_out_statement_and_parameters(self) -> None:
        """What a host sent never reaches the readiness answer or the log."""
        assert describe(FULL) == "database or disk is full"
        assert "what a host sent" not in describe(FULL)


# -- on a real database ------------------------------------------------------------------


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[CollectorService]:
    svc = CollectorService(
        CollectorSettings(database_url=database_url, enroll_secret="s3cret", data_dir=tmp_path)
    )
    svc.start()
    yield svc
    svc.stop()


def read_only(svc: CollectorService) -> Any:
    """Make every new connection of the collector read-only, and drop the ones it holds."""

    def on_connect(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        if svc.engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("SET default_transaction_read_only = on")
            dbapi_conn.commit()
        cursor.close()

    event.listen(svc.engine, "connect", on_connect)
    svc.engine.dispose()
    return on_connect


def writable(svc: CollectorService, on_connect: Any) -> None:
    event.remove(svc.engine, "connect", on_connect)
    svc.engine.dispose()


def submit(svc: CollectorService, host_id: str, sequence: int) -> Any:
    future = svc.ingest_queue.submit(Report.model_validate(make_report(host_id, sequence)), host_id)
    return future.exception(timeout=30) or future.result()


class TestOnADatabase:
    def test_the_probe_commits_and_leaves_nothing(self, service: CollectorService) -> None:
        """The probe's row is gone after it, and no host is added."""
        service.store.probe_write()
        service.store.probe_write()  # and again: nothing left behind to conflict with
        with service.store.read() as conn:
            assert conn.execute(select(func.count()).select_from(hosts)).scalar_one() == 0

    def test_a_read_only_database_makes_the_collector_not_ready(
        self, service: CollectorService
    ) -> None:
        """Reports fail on a read-only database: not ready, saying so; ready after a report
        is stored once it is writable again."""
        service.identity.enroll("web-01", "s3cret")
        assert submit(service, "web-01", 1).status == "stored"
        on_connect = read_only(service)
        try:
            error = submit(service, "web-01", 2)
            assert is_write_failure(error)
            ready = service.ingest_queue.readiness.check()
            assert not ready.ready
            assert ready.reason is not None
            assert "read" in ready.reason.lower()
            assert "only" in ready.reason.lower()
        finally:
            writable(service, on_connect)
        assert submit(service, "web-01", 2).status == "stored"
        assert service.ingest_queue.readiness.check().ready

    def test_an_idle_collector_finds_a_read_only_database_by_its_probe(
        self, service: CollectorService, clock: Clock
    ) -> None:
        """No report for a while: the probe finds the database read-only, and later writable."""
        service.ingest_queue.readiness = readiness = Readiness(service.store, 30, clock=clock)
        on_connect = read_only(service)
        try:
            clock.now += 30
            assert not readiness.check().ready
        finally:
            writable(service, on_connect)
        clock.now += 30
        assert readiness.check().ready
