"""A PostgreSQL database for the collector on its own host, made with pyinfra's postgres
operations: a role named after the collector's system user, and a database it owns.

The collector reaches it over the Unix socket with peer authentication (Debian's default in
``pg_hba.conf``: ``local all all peer``), so there is no database password to keep: the
operating system says who connects. Installing the server package is opt-in
(``fleetwatch_postgresql_install``); a server kept by a DBA elsewhere is named with
``fleetwatch_database_url`` instead.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import apt, postgres

POSTGRESQL_DEFAULTS: dict[str, Any] = {
    "fleetwatch_postgresql_database": None,
    "fleetwatch_postgresql_install": False,
    "fleetwatch_postgresql_socket_dir": "/var/run/postgresql",
    "fleetwatch_collector_user": "fleetwatch-collector",
}


def local_database_url(data: Any) -> str | None:
    """The collector's URL of the local database this deploy makes; None when it makes none."""
    database = data.fleetwatch_postgresql_database
    if not database:
        return None
    role = data.fleetwatch_collector_user
    return f"postgresql://{role}@/{database}?host={data.fleetwatch_postgresql_socket_dir}"


@deploy("Set up PostgreSQL for the fleetwatch collector", data_defaults=POSTGRESQL_DEFAULTS)
def collector_postgresql() -> None:
    """
    Make a PostgreSQL role and database for the collector on this host.

    + fleetwatch_postgresql_database: the database's name (set it to use this deploy)
    + fleetwatch_postgresql_install: install Debian's ``postgresql`` package first (False)
    + fleetwatch_postgresql_socket_dir: the server's Unix socket directory
    + fleetwatch_collector_user: the role's name, as the collector's system user

    The role may log in and owns the database, nothing more. An existing role or database is
    left as it is (pyinfra's postgres operations create or drop, never alter a role).

    **Example:**

    .. code:: python

        # group_data/fleetwatch_collectors.py
        fleetwatch_postgresql_database = "fleetwatch"
        fleetwatch_postgresql_install = True
    """
    data = host.data
    database = data.fleetwatch_postgresql_database
    if not database:
        msg = f"{host.name}: fleetwatch_postgresql_database is not set"
        raise DeployError(msg)
    if data.fleetwatch_postgresql_install:
        apt.packages(
            name="Install the PostgreSQL server (fleetwatch_postgresql_install)",
            packages=["postgresql"],
            no_recommends=True,
            update=True,
            cache_time=3600,
        )
    role = data.fleetwatch_collector_user
    # as the server's superuser, over its socket: su needs no sudo on the host
    postgres.role(
        name=f"Create the PostgreSQL role {role}",
        role=role,
        login=True,
        _su_user="postgres",
    )
    postgres.database(
        name=f"Create the PostgreSQL database {database}",
        database=database,
        owner=role,
        encoding="UTF8",
        _su_user="postgres",
    )
