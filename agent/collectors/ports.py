"""Listening TCP sockets and bound UDP sockets, with the process and user behind each.

psutil names the process behind a socket when the agent may read that process's
``/proc/PID/fd`` (its own, or anyone's with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE). The user
owning a socket is in ``/proc/net/*``, which any user may read: so every listener has its user
even when its process cannot be named.
"""

from __future__ import annotations

import ipaddress
import pwd
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import psutil

from fleetwatch.schema import Listener, PortsData

if TYPE_CHECKING:
    from fleetwatch.schema import SectionName

# A runtime alias: Optional, not `X | None`, which Python 3.9 cannot evaluate
ProcessInfo = Callable[[int], tuple[Optional[str], Optional[str]]]
TCP_LISTEN = "0A"


def _address(hex_address: str) -> str:
    """An address as /proc/net writes it (32-bit words in host order) in normal notation."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


def socket_owners(proc_net: Path = Path("/proc/net")) -> dict[tuple[str, str, int], int]:
    """(protocol, address, port) -> uid of each listening TCP or bound UDP socket."""
    owners: dict[tuple[str, str, int], int] = {}
    for protocol, files in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
        for name in files:
            try:
                lines = (proc_net / name).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 8:
                    continue
                local, remote, state, uid = fields[1], fields[2], fields[3], fields[7]
                if protocol == "tcp" and state != TCP_LISTEN:
                    continue
                if protocol == "udp" and not remote.endswith(":0000"):
                    continue  # connected: a client, not a service
                address, _, port = local.partition(":")
                try:
                    owners[(protocol, _address(address), int(port, 16))] = int(uid)
                except ValueError:
                    continue
    return owners


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def process_info(pid: int) -> tuple[str | None, str | None]:
    """(process name, user name) of a pid, or None for what cannot be read."""
    try:
        process = psutil.Process(pid)
        name = process.name() or None
    except (psutil.Error, OSError):
        return None, None
    try:
        user = process.username() or None
    except (psutil.Error, OSError, KeyError):
        user = None
    return name, user


class PortsCollector:
    """Every listener, loopback and wildcard addresses kept apart as the kernel reports them."""

    name: SectionName = "ports"

    def __init__(
        self,
        net_connections: Callable[..., list[Any]] = psutil.net_connections,
        process: ProcessInfo = process_info,
        owners: Callable[[], dict[tuple[str, str, int], int]] = socket_owners,
    ) -> None:
        self.net_connections = net_connections
        self.process = process
        self.owners = owners

    def collect(self) -> PortsData:
        owners: dict[tuple[str, str, int], int] | None = None
        seen: set[tuple[str, str, int, int | None]] = set()
        processes: dict[int, tuple[str | None, str | None]] = {}
        listeners = []
        for conn in self.net_connections(kind="inet"):
            if conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN:
                protocol = "tcp"
            elif conn.type == socket.SOCK_DGRAM and not conn.raddr:
                protocol = "udp"
            else:
                continue
            if not conn.laddr:
                continue
            key = (protocol, conn.laddr.ip, conn.laddr.port, conn.pid)
            if key in seen:  # one socket per worker of a pre-forked server
                continue
            seen.add(key)
            name = user = None
            if conn.pid is not None:
                if conn.pid not in processes:
                    processes[conn.pid] = self.process(conn.pid)
                name, user = processes[conn.pid]
            if user is None:
                owners = self.owners() if owners is None else owners
                uid = owners.get((protocol, _normal(conn.laddr.ip), conn.laddr.port))
                user = None if uid is None else user_name(uid)
            listeners.append(
                Listener(
                    protocol=protocol,
                    address=conn.laddr.ip,
                    port=conn.laddr.port,
                    pid=conn.pid,
                    process=name,
                    user=user,
                )
            )
        listeners.sort(key=lambda x: (x.protocol, x.port, x.address, x.pid or 0))
        return PortsData(listeners=listeners)
