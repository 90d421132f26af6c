"""A collector with the dashboard's small fleet (tests/collector/web/dashboard/fleet.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.collector.web.dashboard.fleet import ADMIN, POLICY, SECRET, seed


def make_client(database_url: str, tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    config = CollectorSettings(
        database_url=database_url,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        dashboard_live_max_age=0,  # the overview counts on the spot: tests change the fleet
        **settings,
    )
    with TestClient(create_app(config)) as client:
        seed(client)
        yield client


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    yield from make_client(database_url, tmp_path)
