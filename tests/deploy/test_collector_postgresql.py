"""The collector deploy's PostgreSQL set-up, by the real pyinfra over SSH on a lab host running
a real PostgreSQL cluster: the role and database are made, the collector's user reaches its
database over the socket with peer authentication, and a second run changes nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fleetwatch.deploy.deploys.database import POSTGRESQL_DEFAULTS, local_database_url
from tests.helpers import BIN

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOST = "pg-collector-01"
USER = "fleetwatch-collector"


def server_version() -> str | None:
    """The PostgreSQL server installed on this machine (the lab hosts share its /usr)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found or not Path("/usr/bin/pg_createcluster").exists():
        return None
    return found[-1].parent.parent.name


def pyinfra(inventory: Path, recipe: Path) -> dict[str, int]:
    done = subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(inventory), recipe.name],
        cwd=recipe.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total is not None, output[-2000:]
    counts = [0 if v == "-" else int(v) for v in total.groups()]
    return dict(zip(["operations", "changed", "errors", "unchanged"], counts, strict=True))


def test_the_collector_database_is_made_once(make_lab: Any, tmp_path: Path) -> None:
    """Role and database made; the collector's user connects by peer auth; idempotent."""
    version = server_version()
    if version is None:
        pytest.skip("needs a PostgreSQL server on this machine (apt-get install postgresql)")
    lab = make_lab([HOST])
    lab.ssh(HOST, f"useradd --system --no-create-home --shell /usr/sbin/nologin {USER}")
    lab.ssh(HOST, f"pg_createcluster {version} fwtest --port 5432 --start >/dev/null")
    try:
        inventory = tmp_path / "inventory.py"
        data = {**lab.inventory_data(), **lab.host(HOST).inventory_data}
        data["fleetwatch_postgresql_database"] = "fleetwatch"
        inventory.write_text(f"collectors = [({HOST!r}, {data!r})]\n")
        recipe = tmp_path / "database.py"
        recipe.write_text(
            "from fleetwatch.deploy.deploys.database import collector_postgresql\n"
            "collector_postgresql()\n"
        )
        first = pyinfra(inventory, recipe)
        assert first["changed"] == 2, first
        assert first["errors"] == 0

        url = local_database_url(
            SimpleNamespace(**{**POSTGRESQL_DEFAULTS, **data, "fleetwatch_collector_user": USER})
        )
        assert url == f"postgresql://{USER}@/fleetwatch?host=/var/run/postgresql"
        answer = lab.ssh(
            HOST,
            f"su {USER} -s /bin/sh -c "
            f"\"psql '{url}' -Atc 'select current_user, current_database()'\"",
        )
        assert answer.strip() == f"{USER}|fleetwatch"
        owner = lab.ssh(
            HOST,
            'su postgres -c "psql -Atc \\"select pg_get_userbyid(datdba) from pg_database '
            "where datname = 'fleetwatch'\\\"\"",
        )
        assert owner.strip() == USER

        second = pyinfra(inventory, recipe)
        assert second["changed"] == 0, second
    finally:
        lab.ssh(HOST, f"pg_dropcluster --stop {version} fwtest", check=False)
