"""The real `fleetwatch serve`, started by hand with a permissive umask, keeps its database to
its owner: the folder it creates is 0700 and the SQLite files are 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import requests

from tests.helpers import CollectorProcess, make_report


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_collector_creates_its_database_owner_only(tmp_path: Path) -> None:
    """Folder 0700, database, WAL and shared-memory files 0600, with umask 022."""
    data = tmp_path / "new" / "data"
    database = data / "fleetwatch.db"
    previous = os.umask(0o022)
    try:
        collector = CollectorProcess(tmp_path, f"sqlite:///{database}").start()
    finally:
        os.umask(previous)
    try:
        token = requests.post(
            collector.url + "/api/v1/enroll",
            json={"host_id": "modes-01", "enroll_secret": collector.enroll_secret},
            timeout=10,
        ).json()["token"]
        stored = requests.post(
            collector.url + "/api/v1/report",
            json=make_report("modes-01", 1),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert stored.status_code == 200
        assert mode(tmp_path / "new") == 0o700
        assert mode(data) == 0o700
        files = sorted(p.name for p in data.iterdir())
        assert "fleetwatch.db" in files
        assert "fleetwatch.db-wal" in files
        for name in files:
            assert mode(data / name) == 0o600, f"{name} is {oct(mode(data / name))}"
    finally:
        collector.stop()


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    """A data folder the operator made (say 0750 for a backup group) is left as it is."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o750)
    collector = CollectorProcess(tmp_path, f"sqlite:///{data / 'fleetwatch.db'}").start()
    try:
        assert mode(data) == 0o750
        assert mode(data / "fleetwatch.db") == 0o600
    finally:
        collector.stop()
