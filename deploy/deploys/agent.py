"""Installing, upgrading and removing the fleetwatch agent on a host."""

from __future__ import annotations

from io import StringIO
from typing import Any

import tomli_w
from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from fleetwatch.deploy.deploys.runtime import host_runtime, install_fleetwatch, system_account
from fleetwatch.deploy.deploys.service import run_service, stop_service
from fleetwatch.deploy.operations import secret_file

AGENT_DEFAULTS: dict[str, Any] = {
    "fleetwatch_collector_url": None,
    "fleetwatch_enroll_secret": None,
    "fleetwatch_interval": 300,
    "fleetwatch_checks": [],
    "fleetwatch_ca_cert": None,
    "fleetwatch_allow_insecure_http": False,
    "fleetwatch_log_level": "info",
    "fleetwatch_prefix": "/opt/fleetwatch",
    "fleetwatch_python": "python3",
    "fleetwatch_agent_user": "fleetwatch",
    # To name the process behind every socket the agent must read other users'
    # /proc/PID/fd; without these it still reports each socket's owning user.
    "fleetwatch_agent_capabilities": ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"],
}

SERVICE = "fleetwatch-agent"
CONFIG_DIR = "/etc/fleetwatch"
CONFIG = f"{CONFIG_DIR}/agent.toml"
SECRET = f"{CONFIG_DIR}/enroll-secret"
CA_BUNDLE = f"{CONFIG_DIR}/collector-ca.pem"
STATE_DIR = "/var/lib/fleetwatch-agent"
LOG_DIR = "/var/log/fleetwatch-agent"


def agent_config(data: Any, host_id: str) -> str:
    """The agent's settings file; the enrollment secret stays in its own file."""
    settings: dict[str, Any] = {
        "host_id": host_id,
        "collector_url": data.fleetwatch_collector_url,
        "enroll_secret_file": SECRET,
        "state_dir": STATE_DIR,
        "interval": data.fleetwatch_interval,
        "ca_bundle": CA_BUNDLE if data.fleetwatch_ca_cert else None,
        "allow_insecure_http": data.fleetwatch_allow_insecure_http,
        "log_level": data.fleetwatch_log_level,
        "log_format": "json",
    }
    # TOML has no null: a setting left out takes the agent's default
    document = {key: value for key, value in settings.items() if value is not None}
    if data.fleetwatch_checks:
        document["checks"] = list(data.fleetwatch_checks)
    return (
        "# Written by fleetwatch's pyinfra deploy (install_agent); changes are overwritten.\n"
        + tomli_w.dumps(document)
    )


@deploy("Install the fleetwatch agent", data_defaults=AGENT_DEFAULTS)
def install_agent() -> None:
    """
    Install or upgrade the fleetwatch agent and keep it running.

    Creates a system user, a virtualenv with fleetwatch (from an uploaded wheelhouse, or an
    index), ``/etc/fleetwatch/agent.toml`` with this host's settings (its host id is its
    inventory name), the enrollment secret in a file only root and the agent can read, the
    state directory, and a service: a sandboxed systemd unit where systemd is init, a
    supervised daemon elsewhere. The agent restarts only when its code or settings changed.

    + fleetwatch_collector_url: where the agent reports (required)
    + fleetwatch_enroll_secret: the enrollment secret (required)
    + fleetwatch_interval: seconds between reports (300)
    + fleetwatch_checks: active checks, a list of dicts as in the agent's ``[[checks]]``
    + fleetwatch_ca_cert: PEM of the CA that signed the collector's certificate
    + fleetwatch_allow_insecure_http: allow plain HTTP to a collector that is not on loopback
    + fleetwatch_index_url: install from this package index instead of a wheelhouse
    + fleetwatch_source: the fleetwatch wheel or source tree to deploy
    + fleetwatch_agent_capabilities: capabilities the agent keeps
      (CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, to name the process behind every socket)

    **Example:**

    .. code:: python

        from fleetwatch.deploy import install_agent

        install_agent(_parallel=20)
    """
    data = host.data
    for key in ("fleetwatch_collector_url", "fleetwatch_enroll_secret"):
        if not data.get(key):
            msg = f"{host.name}: {key} is not set in the inventory's data"
            if key != "fleetwatch_collector_url":
                msg += " (`fleetwatch bootstrap` makes the fleet's secrets: docs/deploy.md)"
            raise DeployError(msg)
    user = data.fleetwatch_agent_user
    prefix = data.fleetwatch_prefix
    runtime = host_runtime(data.fleetwatch_python)

    system_account(user=user, home=STATE_DIR, label="the fleetwatch")
    files.directory(
        name="Create /etc/fleetwatch", path=CONFIG_DIR, user="root", group=user, mode="750"
    )
    files.directory(
        name="Create the agent's state directory", path=STATE_DIR, user=user, group=user, mode="700"
    )
    files.directory(
        name="Create the agent's log directory", path=LOG_DIR, user="root", group=user, mode="750"
    )
    code = install_fleetwatch(
        name="agent", prefix=prefix, extras="", python=data.fleetwatch_python, runtime=runtime
    )
    secret = secret_file(
        name="Put the enrollment secret",
        path=SECRET,
        content=str(data.fleetwatch_enroll_secret) + "\n",
        group=user,
        mode="640",
    )
    settings = [secret]
    if data.fleetwatch_ca_cert:
        settings.append(
            files.put(
                name="Put the collector's CA certificate",
                src=StringIO(data.fleetwatch_ca_cert),
                dest=CA_BUNDLE,
                mode="644",
            )
        )
    settings.append(
        files.put(
            name="Write /etc/fleetwatch/agent.toml",
            src=StringIO(agent_config(data, host.name)),
            dest=CONFIG,
            user="root",
            group=user,
            mode="640",
        )
    )
    venv = f"{prefix}/agent"
    run_service(
        service=SERVICE,
        systemd_host=bool(runtime["systemd"]),
        description="fleetwatch agent: reports this host's compliance facts",
        user=user,
        command=[f"{venv}/bin/fleetwatch-agent", "--config", CONFIG, "run"],
        supervisor=[f"{venv}/bin/python", "-m", "fleetwatch.supervise"],
        writable=[STATE_DIR],
        capabilities=list(data.fleetwatch_agent_capabilities),
        log=f"{LOG_DIR}/agent.log",
        changed=[*code, *settings],
        nice=10,
    )


@deploy("Remove the fleetwatch agent", data_defaults=AGENT_DEFAULTS)
def remove_agent() -> None:
    """
    Stop the agent and remove everything its install put on the host: service, virtualenv,
    wheelhouse, settings, secrets, state, logs, user and group.

    **Example:**

    .. code:: python

        from fleetwatch.deploy import remove_agent

        remove_agent()
    """
    data = host.data
    user = data.fleetwatch_agent_user
    prefix = data.fleetwatch_prefix
    runtime = host_runtime(data.fleetwatch_python)
    stop_service(service=SERVICE, systemd_host=bool(runtime["systemd"]))
    removed = [
        files.directory(name=f"Remove {what}", path=path, present=False)
        for path, what in [
            (f"{prefix}/agent", "the agent's virtualenv"),
            (f"{prefix}/wheelhouse/agent", "the agent's wheelhouse"),
            (STATE_DIR, "the agent's state (token, spool)"),
            (LOG_DIR, "the agent's logs"),
        ]
    ]
    removed += [
        files.file(name=f"Remove {path}", path=path, present=False)
        for path in (CONFIG, SECRET, CA_BUNDLE)
    ]
    server.shell(
        name="Remove fleetwatch directories left empty",
        commands=[
            f"rmdir --ignore-fail-on-non-empty {d} 2>/dev/null || true"
            for d in (f"{prefix}/wheelhouse", prefix, CONFIG_DIR)
        ],
        _if=any_changed(*removed),
    )
    server.user(name="Remove the fleetwatch system user", user=user, present=False)
    server.group(name="Remove the fleetwatch group", group=user, present=False)
