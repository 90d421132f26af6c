"""Housekeeping runs once per fleet: one process holds the lease, and a dead holder's lease
passes on. On SQLite always, on PostgreSQL when configured; the take-over test kills a real
process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.engine import make_engine
from fleetwatch.collector.storage.lease import FleetLease
from tests.conftest import POSTGRES_ENV, _postgres_url

POLICY = '[defaults]\nallowed_ports = ["tcp/22"]\n'
HOLDER = """
import sys, time
from fleetwatch.collector.storage.engine import make_engine
from fleetwatch.collector.storage.lease import FleetLease
from tests.conftest import POSTGRES_ENV, _postgres_url
lease = FleetLease(make_engine(sys.argv[1]), "housekeeping")
print("held" if lease.held() else "refused", flush=True)
time.sleep(600)
"""


@pytest.fixture
def make_service(database_url: str, tmp_path: Path) -> Iterator[Callable[[], CollectorService]]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    made: list[CollectorService] = []

    def make() -> CollectorService:
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
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()


def wait_for(predicate: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


class TestFleetLease:
    def test_one_process_of_the_fleet_holds_it(
        self, make_service: Callable[[], CollectorService]
    ) -> None:
        """Of two collectors on one database, only the first holds the lease, until it stops."""
        first, second = make_service(), make_service()
        assert first.housekeeper.lease.held()
        assert not second.housekeeper.lease.held()
        assert first.housekeeper.lease.held()  # holding it again is no new claim
        first.stop()
        assert second.housekeeper.lease.held()

    def test_a_killed_holder_lets_another_take_over(self, database_url: str) -> None:
        """A holder killed with SIGKILL leaves the lease free for the next process."""
        make_engine(database_url).dispose()  # creates the SQLite file's folder
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, database_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            mine = FleetLease(make_engine(database_url), "housekeeping")
            assert not mine.held()
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            assert wait_for(mine.held), "the lease never passed on from the killed holder"
            mine.release()
        finally:
            holder.kill()
            holder.wait(timeout=10)

    def test_fleets_in_two_schemas_of_one_database_each_have_one(self, database_url: str) -> None:
        """PostgreSQL's advisory locks span the database: the schema is part of the key, so a
        second fleet in another schema is not kept from its housekeeping."""
        if not database_url.startswith("postgresql"):
            pytest.skip("schemas of one database are PostgreSQL's")
        schema = f"fwtest_{uuid.uuid4().hex[:12]}"
        admin = make_engine(os.environ[POSTGRES_ENV])
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            ours = FleetLease(make_engine(database_url), "housekeeping")
            theirs = FleetLease(make_engine(_postgres_url(schema)), "housekeeping")
            assert ours.held()
            assert theirs.held()
            assert not FleetLease(make_engine(database_url), "housekeeping").held()
            ours.release()
            theirs.release()
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


class TestHousekeeping:
    def test_only_the_holder_evaluates_hosts_after_a_policy_change(
        self, make_service: Callable[[], CollectorService], tmp_path: Path
    ) -> None:
        """Every process follows the new policy; only the lease holder evaluates hosts again."""
        first, second = make_service(), make_service()
        calls = {"first": 0, "second": 0}

        def counting(name: str, svc: CollectorService) -> Callable[[], int]:
            def reevaluate() -> int:
                calls[name] += 1
                return svc.ingestor.reevaluate()

            return reevaluate

        first.housekeeper._reevaluate = counting("first", first)
        second.housekeeper._reevaluate = counting("second", second)
        first.housekeeper.round()
        second.housekeeper.round()
        assert calls == {"first": 1, "second": 0}  # the holder's check on taking the lease
        first.housekeeper.round()
        assert calls == {"first": 1, "second": 0}  # nothing changed since

        (tmp_path / "policy.toml").write_text(POLICY.replace("tcp/22", "tcp/2222"))
        first.housekeeper.round()
        second.housekeeper.round()
        assert first.policy.current.digest == second.policy.current.digest
        assert "tcp/2222" in (first.policy.current.defaults.allowed_ports or [])
        assert calls == {"first": 2, "second": 0}
        first.housekeeper.round()
        assert calls == {"first": 2, "second": 0}  # evaluated once per change (no host moved)

    def test_pruning_runs_only_in_the_holder(
        self, make_service: Callable[[], CollectorService]
    ) -> None:
        """A prune that is due runs in the lease holder, not in the other processes."""
        first, second = make_service(), make_service()
        pruned: list[str] = []
        first.housekeeper._prune = lambda cutoff: (pruned.append("first"), (0, 0))[1]
        second.housekeeper._prune = lambda cutoff: (pruned.append("second"), (0, 0))[1]
        first.housekeeper._next_prune = second.housekeeper._next_prune = 0
        first.housekeeper.round()
        second.housekeeper.round()
        assert pruned == ["first"]
