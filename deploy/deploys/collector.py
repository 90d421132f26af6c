"""Installing and upgrading the fleetwatch collector, with the inventory as its policy."""

from __future__ import annotations

from io import StringIO
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host, state
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files

from fleetwatch.deploy.baseline import InventoryError, policy_text
from fleetwatch.deploy.deploys.database import (
    POSTGRESQL_DEFAULTS,
    collector_postgresql,
    local_database_url,
)
from fleetwatch.deploy.deploys.runtime import host_runtime, install_fleetwatch, system_account
from fleetwatch.deploy.deploys.service import run_service
from fleetwatch.deploy.operations import secret_file

COLLECTOR_DEFAULTS: dict[str, Any] = {
    "fleetwatch_collector_url": None,
    "fleetwatch_admin_token": None,
    "fleetwatch_enroll_secret": None,
    "fleetwatch_tls_cert": None,
    "fleetwatch_tls_key": None,
    "fleetwatch_database_url": None,
    "fleetwatch_collector_listen": "0.0.0.0",  # noqa: S104  (a collector serves its fleet)
    "fleetwatch_collector_workers": 1,
    # every connection is a descriptor: the collector keeps its connection cap below this
    "fleetwatch_collector_open_files": 65536,
    "fleetwatch_collector_user": "fleetwatch-collector",
    "fleetwatch_log_level": "info",
    "fleetwatch_prefix": "/opt/fleetwatch",
    "fleetwatch_python": "python3",
    **POSTGRESQL_DEFAULTS,
}

SERVICE = "fleetwatch-collector"
CONFIG_DIR = "/etc/fleetwatch-collector"
DATA_DIR = "/var/lib/fleetwatch"
LOG_DIR = "/var/log/fleetwatch-collector"


def _environment(data: Any, port: int, tls: bool) -> str:
    values = {
        "FLEETWATCH_HOST": data.fleetwatch_collector_listen,
        "FLEETWATCH_PORT": str(port),
        "FLEETWATCH_WORKERS": str(data.fleetwatch_collector_workers),
        "FLEETWATCH_DATA_DIR": DATA_DIR,
        "FLEETWATCH_DATABASE_URL": data.fleetwatch_database_url or local_database_url(data),
        "FLEETWATCH_POLICY": f"{CONFIG_DIR}/policy.toml",
        "FLEETWATCH_ADMIN_TOKEN_FILE": f"{CONFIG_DIR}/admin-token",
        "FLEETWATCH_ENROLL_SECRET_FILE": f"{CONFIG_DIR}/enroll-secret",
        "FLEETWATCH_TLS_CERT": f"{CONFIG_DIR}/tls.crt" if tls else None,
        "FLEETWATCH_TLS_KEY": f"{CONFIG_DIR}/tls.key" if tls else None,
        "FLEETWATCH_LOG_LEVEL": data.fleetwatch_log_level,
        "FLEETWATCH_LOG_FORMAT": "json",
    }
    lines = ["# Written by fleetwatch's pyinfra deploy (install_collector)."]
    lines += [f"{key}={value}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


@deploy("Install the fleetwatch collector", data_defaults=COLLECTOR_DEFAULTS)
def install_collector() -> None:
    """
    Install or upgrade the fleetwatch collector and keep it running, with the policy compiled
    from this inventory.

    The collector listens on the port of ``fleetwatch_collector_url`` (HTTPS when it starts
    with ``https://``, with ``fleetwatch_tls_cert`` and ``fleetwatch_tls_key``). Its policy is
    the inventory's data, resolved for every host as pyinfra resolves it; a changed baseline
    is picked up by the running collector within seconds, without a restart. The collector
    restarts only when its code or settings changed.

    + fleetwatch_collector_url: the URL agents report to (required)
    + fleetwatch_admin_token: the bootstrap admin API token (required)
    + fleetwatch_enroll_secret: the fleet-wide enrollment secret (required)
    + fleetwatch_tls_cert, fleetwatch_tls_key: PEM certificate chain and key, for https://
    + fleetwatch_database_url: a postgresql:// URL; SQLite in /var/lib/fleetwatch by default
    + fleetwatch_postgresql_database: make this PostgreSQL database on the collector's host
      and use it (see ``collector_postgresql``); fleetwatch_postgresql_install: install the
      server package too
    + fleetwatch_collector_workers: collector processes (one per CPU core at most)
    + fleetwatch_collector_open_files: the unit's LimitNOFILE (65536)

    **Example:**

    .. code:: python

        from fleetwatch.deploy import install_collector

        if "fleetwatch_collectors" in host.groups:
            install_collector()
    """
    data = host.data
    for key in ("fleetwatch_collector_url", "fleetwatch_admin_token", "fleetwatch_enroll_secret"):
        if not data.get(key):
            msg = f"{host.name}: {key} is not set in the inventory's data"
            if key != "fleetwatch_collector_url":
                msg += " (`fleetwatch bootstrap` makes the fleet's secrets: docs/deploy.md)"
            raise DeployError(msg)
    url = urlsplit(data.fleetwatch_collector_url)
    tls = url.scheme == "https"
    if tls and not (data.fleetwatch_tls_cert and data.fleetwatch_tls_key):
        msg = (
            f"{host.name}: an https:// collector needs fleetwatch_tls_cert and fleetwatch_tls_key"
            " (`fleetwatch bootstrap` makes them: docs/deploy.md)"
        )
        raise DeployError(msg)
    port = url.port or (443 if tls else 80)
    try:
        policy = policy_text(state.inventory, "the inventory")
    except InventoryError as exc:
        raise DeployError(str(exc)) from exc

    user = data.fleetwatch_collector_user
    prefix = data.fleetwatch_prefix
    runtime = host_runtime(data.fleetwatch_python)
    system_account(user=user, home=DATA_DIR, label="the collector's")
    if data.fleetwatch_postgresql_database and not data.fleetwatch_database_url:
        collector_postgresql()
    files.directory(
        name=f"Create {CONFIG_DIR}", path=CONFIG_DIR, user="root", group=user, mode="750"
    )
    files.directory(
        name="Create the collector's data directory",
        path=DATA_DIR,
        user=user,
        group=user,
        mode="700",
    )
    files.directory(
        name="Create the collector's log directory",
        path=LOG_DIR,
        user="root",
        group=user,
        mode="750",
    )
    code = install_fleetwatch(
        name="collector",
        prefix=prefix,
        extras="collector",
        python=data.fleetwatch_python,
        runtime=runtime,
    )
    settings = [
        secret_file(
            name="Put the admin token",
            path=f"{CONFIG_DIR}/admin-token",
            content=str(data.fleetwatch_admin_token) + "\n",
            group=user,
        ),
        secret_file(
            name="Put the enrollment secret",
            path=f"{CONFIG_DIR}/enroll-secret",
            content=str(data.fleetwatch_enroll_secret) + "\n",
            group=user,
        ),
        secret_file(
            name="Put the collector settings",
            path=f"{CONFIG_DIR}/collector.env",
            content=_environment(data, port, tls),
            group=user,
        ),
    ]
    if tls:
        settings += [
            files.put(
                name="Put the TLS certificate",
                src=StringIO(data.fleetwatch_tls_cert),
                dest=f"{CONFIG_DIR}/tls.crt",
                user="root",
                group=user,
                mode="644",
            ),
            secret_file(
                name="Put the TLS key",
                path=f"{CONFIG_DIR}/tls.key",
                content=data.fleetwatch_tls_key,
                group=user,
            ),
        ]
    # The policy is not among the restart triggers: the collector re-reads it by itself.
    files.put(
        name="Install the policy compiled from the inventory",
        src=StringIO(policy),
        dest=f"{CONFIG_DIR}/policy.toml",
        user="root",
        group=user,
        mode="640",
    )
    venv = f"{prefix}/collector"
    serve = f"{venv}/bin/fleetwatch serve"
    run_service(
        service=SERVICE,
        systemd_host=bool(runtime["systemd"]),
        description="fleetwatch collector",
        user=user,
        command=["/bin/sh", "-c", f"set -a; . {CONFIG_DIR}/collector.env; exec {serve}"],
        supervisor=[f"{venv}/bin/python", "-m", "fleetwatch.supervise"],
        writable=[DATA_DIR],
        capabilities=["CAP_NET_BIND_SERVICE"] if port < 1024 else [],
        log=f"{LOG_DIR}/collector.log",
        changed=[*code, *settings],
        open_files=int(data.fleetwatch_collector_open_files),
    )
