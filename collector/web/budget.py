"""The connection budget: no more connections than the process has file descriptors for.

Every connection holds a file descriptor. A process that runs out of them cannot accept: the
event loop then closes new connections at once (libuv) or stops accepting for a second
(asyncio), so every client, well-behaved or not, gets resets and empty replies, and nothing
says why. So before it listens the collector raises its soft ``RLIMIT_NOFILE`` toward the hard
limit as far as its connection cap needs, and when even that is too few it lowers the cap to
what fits, keeping descriptors back for its own files and for a burst of new connections.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

OWN_DESCRIPTORS = 160
"""Descriptors kept back for the process's own files, never for connections. At most: on
SQLite 40 pooled database connections with their database and WAL files (80; on PostgreSQL 30
sockets), and about 15 more for the lease, the policy file, the listening socket, the event
loop's own (epoll, signal pipe) and standard streams. Measured: 31 under 80 concurrent
clients on SQLite."""

MIN_BACKLOG = 16
MAX_BACKLOG = 1024
"""The listen backlog: connections the kernel completes and queues before the collector sees
them. The event loop accepts the whole queue at once before any of them is counted, so the
budget keeps this many descriptors spare for such a burst."""

MIN_CONNECTIONS = 16

Limits = tuple[int, int]


class DescriptorLimitError(Exception):
    """The process may open too few files to serve connections at all."""


@dataclass(frozen=True)
class ConnectionBudget:
    """How many connections one worker holds, and the descriptors that figure comes from."""

    max_connections: int
    """What the settings ask for."""
    cap: int
    """What the worker holds at most: ``max_connections``, or fewer when descriptors lack."""
    descriptors: int
    """The soft ``RLIMIT_NOFILE`` the process runs with."""
    raised_from: int | None
    """The soft limit before the collector raised it, when it did."""
    backlog: int
    """The listen backlog, and the descriptors kept spare for a burst of new connections."""

    @property
    def lowered(self) -> bool:
        return self.cap < self.max_connections


def _backlog(spare: int) -> int:
    return min(MAX_BACKLOG, max(MIN_BACKLOG, spare // 8))


def plan_budget(
    max_connections: int,
    *,
    getrlimit: Callable[[int], Limits] = resource.getrlimit,
    setrlimit: Callable[[int, Limits], None] = resource.setrlimit,
) -> ConnectionBudget:
    """Raise the soft descriptor limit as far as ``max_connections`` needs and the hard limit
    allows, and work out the connections that fit in it.

    Raises `DescriptorLimitError` when fewer than `MIN_CONNECTIONS` fit.
    """
    backlog = _backlog(max_connections)
    wanted = max_connections + backlog + OWN_DESCRIPTORS
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    raised_from = None
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            try:
                setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError):
                pass  # the kernel's own ceiling (fs.nr_open) is below the hard limit
            else:
                raised_from, soft = soft, target
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return ConnectionBudget(max_connections, max_connections, soft, raised_from, backlog)
    spare = soft - OWN_DESCRIPTORS
    backlog = min(backlog, _backlog(spare))
    cap = min(max_connections, spare - backlog)
    if cap < MIN_CONNECTIONS:
        msg = (
            f"the process may open {soft} files (ulimit -n, LimitNOFILE=): too few to serve "
            f"connections; the collector needs at least "
            f"{OWN_DESCRIPTORS + MIN_BACKLOG + MIN_CONNECTIONS}"
        )
        raise DescriptorLimitError(msg)
    return ConnectionBudget(max_connections, cap, soft, raised_from, backlog)
