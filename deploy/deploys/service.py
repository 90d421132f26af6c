"""Running a fleetwatch program as a service: a systemd unit where systemd is init, a
supervised daemon (``start-stop-daemon`` + ``python -m fleetwatch.supervise``) elsewhere."""

from __future__ import annotations

from io import StringIO
from typing import TYPE_CHECKING

from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from fleetwatch.deploy.operations import daemon

if TYPE_CHECKING:
    from pyinfra.api.operation import OperationMeta

# Everything a fleetwatch service may do without; the agent still reads every process's
# sockets and the package state, and writes only its own state directory.
SANDBOX = """\
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={writable}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
UMask=0077
"""


def unit_text(
    *,
    description: str,
    user: str,
    command: list[str],
    writable: list[str],
    capabilities: list[str],
    nice: int = 0,
    open_files: int | None = None,
) -> str:
    caps = " ".join(capabilities)
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Group={user}",
        "ExecStart=" + " ".join(command),
        "Restart=always",
        "RestartSec=10",
        f"AmbientCapabilities={caps}",
        f"CapabilityBoundingSet={caps}",
        f"Nice={nice}",
        *([f"LimitNOFILE={open_files}"] if open_files else []),
        SANDBOX.format(writable=" ".join(writable)).rstrip(),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def logrotate_text(log: str) -> str:
    """logrotate's configuration for a supervised service's log (hosts without systemd; with
    systemd the output goes to the journal, which rotates it itself)."""
    return (
        "# Written by fleetwatch's pyinfra deploy. start-stop-daemon appends the service's\n"
        "# output to this file (O_APPEND) and never reopens it: copytruncate, so the next\n"
        "# line lands at the start of the truncated file.\n"
        f"{log} {{\n"
        "    weekly\n"
        "    maxsize 50M\n"
        "    rotate 8\n"
        "    compress\n"
        "    delaycompress\n"
        "    missingok\n"
        "    notifempty\n"
        "    copytruncate\n"
        "}\n"
    )


def run_service(  # noqa: PLR0913
    *,
    service: str,
    systemd_host: bool,
    description: str,
    user: str,
    command: list[str],
    supervisor: list[str],
    writable: list[str],
    capabilities: list[str],
    log: str,
    changed: list[OperationMeta],
    nice: int = 0,
    open_files: int | None = None,
) -> None:
    """Keep ``command`` running as ``user``; restart it when any of ``changed`` changed."""
    if systemd_host:
        unit = files.put(
            name=f"Install the {service} systemd unit",
            src=StringIO(
                unit_text(
                    description=description,
                    user=user,
                    command=command,
                    writable=writable,
                    capabilities=capabilities,
                    nice=nice,
                    open_files=open_files,
                )
            ),
            dest=f"/etc/systemd/system/{service}.service",
            mode="644",
        )
        systemd.service(
            name=f"Restart {service} (its code, settings or unit changed)",
            service=service,
            running=True,
            restarted=True,
            daemon_reload=True,
            _if=any_changed(unit, *changed),
        )
        systemd.service(
            name=f"Enable and start {service}", service=service, running=True, enabled=True
        )
        return
    pidfile = f"/run/{service}.pid"
    files.put(
        name=f"Rotate the {service} log (logrotate)",
        src=StringIO(logrotate_text(log)),
        dest=f"/etc/logrotate.d/{service}",
        mode="644",
    )
    daemon(
        name=f"Restart {service} (its code or settings changed)",
        pidfile=pidfile,
        argv=[*supervisor, "--", *command],
        user=user,
        log=log,
        capabilities=capabilities,
        restarted=True,
        _if=any_changed(*changed),
    )
    daemon(
        name=f"Keep {service} running (supervised, without systemd)",
        pidfile=pidfile,
        argv=[*supervisor, "--", *command],
        user=user,
        log=log,
        capabilities=capabilities,
    )


def stop_service(*, service: str, systemd_host: bool) -> None:
    if systemd_host:
        systemd.service(
            name=f"Stop and disable {service}", service=service, running=False, enabled=False
        )
        removed = files.file(
            name=f"Remove the {service} unit",
            path=f"/etc/systemd/system/{service}.service",
            present=False,
        )
        systemd.daemon_reload(name="Reload systemd", _if=any_changed(removed))
        return
    files.file(
        name=f"Remove the {service} log rotation",
        path=f"/etc/logrotate.d/{service}",
        present=False,
    )
    daemon(
        name=f"Stop {service}",
        pidfile=f"/run/{service}.pid",
        argv=[],
        user="root",
        log="/dev/null",
        running=False,
    )
