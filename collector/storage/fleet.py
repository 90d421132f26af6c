"""The fleet in figures: aggregates over the hosts and their open findings.

Read at scrape time by ``/metrics`` (`web.metrics`). Two statements, each one pass over a
table that holds one row per host (``hosts``) or over the open findings alone (through the
partial index ``uq_findings_open`` and ``ix_findings_host_id_resolved_at``); neither reads
the reports table, which grows with every report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, select

from fleetwatch.collector.storage.tables import findings, hosts

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy import Connection


@dataclass(frozen=True)
class HostPresence:
    """What a host's status needs: its unit, when its latest facts were true (and when they
    arrived), and whether it has open findings."""

    host_id: str
    unit: str | None
    observed_at: datetime | None
    received_at: datetime | None
    has_open: bool


@dataclass(frozen=True)
class OpenFindings:
    """A host's open findings of one rule and severity: how many, and since when the oldest."""

    host_id: str
    rule: str
    severity: str
    count: int
    oldest: datetime


def host_presence(conn: Connection) -> Iterator[HostPresence]:
    """Every enrolled host, with what its status needs (one pass over ``hosts``)."""
    has_open = exists().where(
        findings.c.host_id == hosts.c.host_id, findings.c.resolved_at.is_(None)
    )
    query = select(
        hosts.c.host_id,
        hosts.c.unit,
        hosts.c.last_collected_at,
        hosts.c.last_received_at,
        has_open.label("has_open"),
    )
    for row in conn.execute(query):
        # as HostRow.observed_at: collected, unless the host's clock was ahead
        seen = (
            min(row.last_collected_at, row.last_received_at)
            if row.last_collected_at is not None and row.last_received_at is not None
            else None
        )
        yield HostPresence(row.host_id, row.unit, seen, row.last_received_at, bool(row.has_open))


def open_findings(conn: Connection) -> Iterator[OpenFindings]:
    """Open findings by host, rule and severity, with the oldest one's first sighting."""
    oldest = func.min(findings.c.first_seen).label("oldest")
    query = (
        select(
            findings.c.host_id,
            findings.c.rule,
            findings.c.severity,
            func.count().label("n"),
            oldest,
        )
        .where(findings.c.resolved_at.is_(None))
        .group_by(findings.c.host_id, findings.c.rule, findings.c.severity)
    )
    for row in conn.execute(query):
        # min() keeps its column's type, so the oldest comes back as an aware UTC datetime
        yield OpenFindings(row.host_id, row.rule, row.severity, int(row.n), row.oldest)
