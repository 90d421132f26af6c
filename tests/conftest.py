"""Fixtures for every test: clean logging, databases (SQLite always, PostgreSQL on request)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

POSTGRES_ENV = "FLEETWATCH_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts with structlog's defaults, whatever an earlier test configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_fleetwatch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the environment the suite runs in."""
    for key in list(os.environ):
        if key.startswith("FLEETWATCH_") and key != POSTGRES_ENV:
            monkeypatch.delenv(key)


def _postgres_url(schema: str) -> str:
    from sqlalchemy.engine import make_url

    from fleetwatch.collector.storage.engine import normalize_url

    base = make_url(normalize_url(os.environ[POSTGRES_ENV]))
    return base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def _database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in ``directory``, or a schema of its own on
    PostgreSQL."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'fleetwatch.db'}"
        return
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    from sqlalchemy import create_engine, text

    from fleetwatch.collector.storage.engine import normalize_url

    schema = f"fwtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(os.environ[POSTGRES_ENV]))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a schema of its own on PostgreSQL."""
    with _database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same, shared by a module's tests: for a module whose tests only read what one
    expensive set-up wrote (a collector, imports, reports)."""
    with _database(request.param, tmp_path_factory.mktemp("database")) as url:
        yield url


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[list[str]], Any]]:
    """Build lab hosts (see tests/lab.py); every lab made is torn down, also on failure."""
    from tests.lab import Lab, missing_requirements

    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    labs: list[Lab] = []

    def make(names: list[str], root: Path | None = None) -> Lab:
        """``root``: the hosts run on private overlays of this Debian root (tests/lab.py)."""
        directory = Path(f"/tmp/fwlab-{uuid.uuid4().hex[:8]}")
        lab = Lab.create(directory, names, root=root)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.destroy()
        assert lab.leftovers() == [], f"the lab left things behind: {lab.leftovers()}"
