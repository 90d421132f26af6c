"""The fleet in figures: aggregates over the open findings and what hosts carry.

Read at scrape time by ``/metrics`` (`web.metrics`), beside the hosts by unit and status
that `storage.tallies` keeps. Each statement here reads the open findings alone (through the
partial index ``uq_findings_open`` and ``ix_findings_host_id_resolved_at``), grouped by the
unit each host is placed in, or ``host_vulnerabilities`` (what each host carries now), or
the end of the index of when hosts last reported; none reads the reports table, which grows
with every report, and none visits every host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, case, func, or_, select

from fleetwatch.collector.storage.tables import (
    UTCDateTime,
    findings,
    host_placements,
    host_vulnerabilities,
    hosts,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy import ColumnElement, Connection


@dataclass(frozen=True)
class OpenFindings:
    """Open findings of one rule and severity in a unit: how many, and when the oldest of
    them was first seen. Waived findings are not counted."""

    owner: str  # the unit they are grouped by ("" for none)
    rule: str
    severity: str
    count: int
    oldest: datetime
    overdue: int = 0  # of them, past their due date


@dataclass(frozen=True)
class Vulnerabilities:
    """Vulnerabilities hosts carry (one per host, CVE and source package), of one severity
    (None: unrated) and known exploited or not."""

    severity: str | None
    exploited: bool
    count: int


def counting() -> tuple[ColumnElement[bool], ...]:
    """The findings that count against a host: open and not waived (as
    `storage.findings.Findings.open_counts`, which the API reads)."""
    return (findings.c.resolved_at.is_(None), findings.c.waiver_id.is_(None))


def _overdue(now: datetime) -> ColumnElement[int]:
    """1 for a counting finding past its due date (`FindingRow.is_overdue`), or announced
    overdue, else 0: summed, the overdue findings of a group."""
    late = or_(
        findings.c.overdue_at.is_not(None),
        findings.c.due_at <= bindparam("now", now, type_=UTCDateTime()),
    )
    return func.sum(case((late, 1), else_=0))


def last_received(conn: Connection) -> datetime | None:
    """When the newest report of any host was received (the end of an index)."""
    return conn.execute(select(func.max(hosts.c.last_received_at))).scalar_one_or_none()


def open_findings_by_unit(conn: Connection, now: datetime) -> Iterator[OpenFindings]:
    """Open findings grouped by the unit their host is placed in now (``host_placements``:
    the policy's unit, else the one it enrolled into), rule and severity, and how many of
    them are overdue ``now``."""
    unit = func.coalesce(host_placements.c.unit, "")
    query = (
        select(
            unit,
            findings.c.rule,
            findings.c.severity,
            func.count(),
            func.min(findings.c.first_seen),
            _overdue(now),
        )
        .select_from(
            findings.join(host_placements, host_placements.c.host_id == findings.c.host_id)
        )
        .where(*counting())
        .group_by(unit, findings.c.rule, findings.c.severity)
    )
    for owner, rule, severity, count, oldest, overdue in conn.execute(query):
        yield OpenFindings(owner, rule, severity, int(count), oldest, int(overdue or 0))


def vulnerabilities(conn: Connection) -> Iterator[Vulnerabilities]:
    """The vulnerabilities hosts carry, counted by severity and exploited (one pass over
    ``host_vulnerabilities``, which holds what each host carries now); nothing without
    vulnerability data."""
    query = select(
        host_vulnerabilities.c.severity, host_vulnerabilities.c.exploited, func.count()
    ).group_by(host_vulnerabilities.c.severity, host_vulnerabilities.c.exploited)
    for severity, exploited, count in conn.execute(query):
        yield Vulnerabilities(severity, bool(exploited), int(count))
