"""Listening TCP sockets and bound UDP sockets, with the process and user behind each."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from agent.schema import Listener, PortsData

if TYPE_CHECKING:
    from agent.schema import SectionName

ProcessInfo = Callable[[int], tuple[str | None, str | None]]


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
    ) -> None:
        self.net_connections = net_connections
        self.process = process

    def collect(self) -> PortsData:
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
