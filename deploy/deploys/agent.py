"""Installing, upgrading and removing the fleetwatch agent on a host."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
from pyinfra import host
from pyinfra.api import DeployError, deploy
from pyinfra.operations import apt, files, server, systemd, sysvinit
from pyinfra.operations.util import any_changed

from fleetwatch import debversion
from fleetwatch.deploy import wheels
from fleetwatch.deploy.deploys.runtime import host_runtime, install_fleetwatch, system_account
from fleetwatch.deploy.deploys.service import run_service, stop_service
from fleetwatch.deploy.operations import secret_file

if TYPE_CHECKING:
    from pyinfra.api.operation import OperationMeta

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
    # "wheelhouse" (a virtualenv the deploy makes) or "deb" (the agent's Debian package)
    "fleetwatch_agent_package": "wheelhouse",
    # the .deb to install; by default the newest dist/fleetwatch-agent_*.deb of the source tree
    "fleetwatch_agent_deb": None,
}
PACKAGE_KINDS = ("wheelhouse", "deb")
DEB_PACKAGE = "fleetwatch-agent"
DEB_USER = "fleetwatch"  # the user the package creates and runs the agent as
DEB_CACHE = "/var/cache/fleetwatch-agent"  # where the deploy uploads the .deb

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


def agent_deb(data: Any, dist: Path | None = None) -> Path:
    """The agent .deb this host gets: ``fleetwatch_agent_deb``, or the newest one that
    ``scripts/build-deb`` left in ``dist`` (by default the source tree's dist/)."""
    if data.fleetwatch_agent_deb:
        deb = Path(data.fleetwatch_agent_deb).expanduser()
        if not deb.is_file():
            msg = f"fleetwatch_agent_deb: no such file {deb}"
            raise DeployError(msg)
        return deb
    if dist is None:
        source = wheels.default_source()
        dist = source / "dist" if source else None
    built = sorted(dist.glob(f"{DEB_PACKAGE}_*.deb")) if dist else []
    if not built:
        msg = (
            f"no {DEB_PACKAGE} .deb to deploy: run ./scripts/build-deb agent, "
            "or set fleetwatch_agent_deb to the .deb's path"
        )
        raise DeployError(msg)
    # fleetwatch-agent_VERSION_ARCH.deb: the newest by Debian's version order
    newest = built[0]
    for deb in built[1:]:
        if debversion.compare(deb.name.split("_")[1], newest.name.split("_")[1]) > 0:
            newest = deb
    return newest


def install_agent_deb(data: Any) -> list[OperationMeta]:
    """Upload the agent's .deb and install it with dpkg (apt for missing dependencies); the
    operations that changed its code. The package makes the user, directories, virtualenv,
    unit and boot script; settings it finds in place (its conffiles) it keeps."""
    if data.fleetwatch_agent_user != DEB_USER:
        msg = (
            f"{host.name}: the {DEB_PACKAGE} package runs the agent as {DEB_USER}; "
            f"fleetwatch_agent_user {data.fleetwatch_agent_user!r} works only with the wheelhouse"
        )
        raise DeployError(msg)
    deb = agent_deb(data)
    files.directory(name=f"Create {DEB_CACHE} for the agent's package", path=DEB_CACHE, mode="755")
    remote = f"{DEB_CACHE}/{deb.name}"
    uploaded = files.put(name=f"Upload {deb.name}", src=str(deb), dest=remote, mode="644")
    # pyinfra's apt.deb installs when the host lacks this very version; it never asks about a
    # conffile (--force-confold keeps the agent.toml this deploy writes)
    installed = apt.deb(name=f"Install {deb.name} (dpkg)", src=remote)
    server.shell(
        name="Remove older agent packages from the upload directory",
        commands=[f"find {DEB_CACHE} -name '{DEB_PACKAGE}_*.deb' ! -name '{deb.name}' -delete"],
        _if=any_changed(uploaded),
    )
    return [installed]


def keep_packaged_agent_running(*, systemd_host: bool, changed: list[OperationMeta]) -> None:
    """Start the packaged agent with the package's own unit or boot script; restart it when
    its code or settings changed."""
    if systemd_host:
        systemd.service(
            name=f"Restart {SERVICE} (its package or settings changed)",
            service=SERVICE,
            running=True,
            restarted=True,
            daemon_reload=True,
            _if=any_changed(*changed),
        )
        systemd.service(
            name=f"Enable and start {SERVICE}", service=SERVICE, running=True, enabled=True
        )
        return
    sysvinit.service(
        name=f"Restart {SERVICE} (its package or settings changed)",
        service=SERVICE,
        running=True,
        restarted=True,
        _if=any_changed(*changed),
    )
    sysvinit.service(
        name=f"Keep {SERVICE} running (its boot script)", service=SERVICE, running=True
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
    + fleetwatch_agent_package: ``wheelhouse`` (default) or ``deb``: install the agent's
      Debian package instead, with dpkg, and run it with the package's unit or boot script
    + fleetwatch_agent_deb: the .deb to install (default: the newest
      ``dist/fleetwatch-agent_*.deb`` that ``scripts/build-deb`` made)

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
    if data.fleetwatch_agent_package not in PACKAGE_KINDS:
        msg = (
            f"{host.name}: fleetwatch_agent_package is {data.fleetwatch_agent_package!r}; "
            f"choose {' or '.join(PACKAGE_KINDS)}"
        )
        raise DeployError(msg)
    from_deb = data.fleetwatch_agent_package == "deb"
    user = data.fleetwatch_agent_user
    prefix = data.fleetwatch_prefix
    runtime = host_runtime(data.fleetwatch_python)

    # a package makes the user and the directories itself, and its postinst the virtualenv
    code = install_agent_deb(data) if from_deb else install_fleetwatch_from_wheels(data, runtime)
    settings = write_agent_settings(data)
    if from_deb:
        keep_packaged_agent_running(
            systemd_host=bool(runtime["systemd"]), changed=[*code, *settings]
        )
        return
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
        init=str(runtime.get("init", "unknown")),
    )


def install_fleetwatch_from_wheels(data: Any, runtime: dict[str, Any]) -> list[OperationMeta]:
    """The system user, the agent's directories and its virtualenv from a wheelhouse."""
    user = data.fleetwatch_agent_user
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
    return install_fleetwatch(
        name="agent",
        prefix=data.fleetwatch_prefix,
        extras="",
        python=data.fleetwatch_python,
        runtime=runtime,
    )


def write_agent_settings(data: Any) -> list[OperationMeta]:
    """The enrollment secret, the collector's CA and agent.toml; the operations that wrote them."""
    user = data.fleetwatch_agent_user
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
    return settings


@deploy("Remove the fleetwatch agent", data_defaults=AGENT_DEFAULTS)
def remove_agent() -> None:
    """
    Stop the agent and remove everything its install put on the host: service, virtualenv,
    wheelhouse, settings, secrets, state, logs, user and group. With
    ``fleetwatch_agent_package = "deb"`` the package is purged, which removes all of that too.

    **Example:**

    .. code:: python

        from fleetwatch.deploy import remove_agent

        remove_agent()
    """
    data = host.data
    if data.fleetwatch_agent_package == "deb":
        # its prerm stops the agent, its postrm (purge) removes what the package and the
        # agent made, the settings this deploy wrote included
        apt.packages(
            name=f"Purge the {DEB_PACKAGE} package",
            packages=[DEB_PACKAGE],
            present=False,
            purge=True,
        )
        files.directory(
            name=f"Remove {DEB_CACHE} (the uploaded package)", path=DEB_CACHE, present=False
        )
        return
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
