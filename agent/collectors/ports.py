"""Listening TCP sockets and bound UDP sockets, with the process and user behind each.

psutil names the process behind a socket when the agent may read that process's
``/proc/PID/fd`` (its own, or anyone's with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE). The user
owning a socket is in ``/proc/net/*``, which any user may read: so every listener has its user
even when its process cannot be named.

A UDP socket that is not connected may still be a client's: one that only ``sendto``s is
given a port by the kernel (autobind) from ``net.ipv4.ip_local_port_range``, and holds it as
long as it lives. Nothing in ``/proc`` or sock_diag tells an autobound port from one a
process bound explicitly, so a UDP socket on a port in that range is taken for a client
unless the port is in ``net.ipv4.ip_local_reserved_ports`` (which the kernel never hands out
by autobind, and which is how a service that binds a port in that range keeps it free). The
limit: a UDP service that binds a port in the ephemeral range without reserving it (an RPC
service bound to port 0 and registered with the portmapper, say) is not reported.
"""

from __future__ import annotations

import ipaddress
import pwd
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from fleetwatch.schema import Listener, PortsData

if TYPE_CHECKING:
    from fleetwatch.schema import SectionName

ProcessInfo = Callable[[int], tuple[str | None, str | None]]
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


@dataclass(frozen=True)
class EphemeralPorts:
    """The ports the kernel hands out by autobind: the local port range less reserved ports."""

    low: int
    high: int
    reserved: frozenset[int] = frozenset()

    def autobound(self, port: int) -> bool:
        """Whether a socket on ``port`` may have been given it by the kernel."""
        return self.low <= port <= self.high and port not in self.reserved


NO_EPHEMERAL_PORTS = EphemeralPorts(1, 0)


def ephemeral_ports(proc_sys: Path = Path("/proc/sys/net/ipv4")) -> EphemeralPorts:
    """The kernel's ephemeral ports (for IPv4 and IPv6 alike); none when unreadable."""
    try:
        low_text, high_text = (proc_sys / "ip_local_port_range").read_text().split()
        reserved_text = (proc_sys / "ip_local_reserved_ports").read_text().strip()
        reserved: set[int] = set()
        for part in filter(None, reserved_text.split(",")):
            first, _, last = part.partition("-")
            reserved.update(range(int(first), int(last or first) + 1))
        return EphemeralPorts(int(low_text), int(high_text), frozenset(reserved))
    except (OSError, ValueError):
        return NO_EPHEMERAL_PORTS  # report every unconnected UDP socket rather than guess


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
        ephemeral: Callable[[], EphemeralPorts] = ephemeral_ports,
    ) -> None:
        self.net_connections = net_connections
        self.process = process
        self.owners = owners
        self.ephemeral = ephemeral

    def collect(self) -> PortsData:
        owners: dict[tuple[str, str, int], int] | None = None
        seen: set[tuple[str, str, int, int | None]] = set()
        processes: dict[int, tuple[str | None, str | None]] = {}
        listeners = []
        ephemeral = self.ephemeral()
        for conn in self.net_connections(kind="inet"):
            if not conn.laddr:
                continue
            if conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN:
                protocol = "tcp"
            elif (
                conn.type == socket.SOCK_DGRAM
                and not conn.raddr  # a connected UDP socket talks to one peer: a client
                and not ephemeral.autobound(conn.laddr.port)
            ):
                protocol = "udp"
            else:
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
