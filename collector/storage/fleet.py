"""The fleet in figures: aggregates over the hosts and their open findings.

Read at scrape time by ``/metrics`` (`web.metrics`). Each statement is one pass over a table
that holds one row per host (``hosts``) or over the open findings alone (through the partial
index ``uq_findings_open`` and ``ix_findings_host_id_resolved_at``) or over
``host_vulnerabilities`` (what each host carries now); none reads the reports table, which
grows with every report. Times are compared in SQL: a host's row comes back as a few
booleans, never as datetimes to parse, and findings come back grouped by unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, case, exists, func, or_, select

from fleetwatch.collector.storage.tables import (
    UTCDateTime,
    findings,
    host_vulnerabilities,
    hosts,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence
    from datetime import datetime

    from sqlalchemy import ColumnElement, Connection

# Host ids per statement when findings of named hosts are asked for.
CHUNK = 500


@dataclass(frozen=True)
class HostPresence:
    """What a host's status needs: its unit, whether it ever reported, whether its latest
    facts are older than each cutoff asked for, and whether it has open findings."""

    host_id: str
    unit: str | None
    reported: bool
    older_than: tuple[bool, ...]  # one per cutoff, in the order given
    has_open: bool


@dataclass(frozen=True)
class OpenFindings:
    """Open findings of one rule and severity, in a unit or of a host: how many, and when
    the oldest of them was first seen. Waived findings are not counted."""

    owner: str | None  # the unit (or host) they are grouped by
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


def _observed() -> ColumnElement[datetime]:
    """When a host's latest facts were true (as HostRow.observed_at): collected, unless the
    host's clock was ahead of the collector's."""
    return case(
        (hosts.c.last_collected_at < hosts.c.last_received_at, hosts.c.last_collected_at),
        else_=hosts.c.last_received_at,
    )


def host_presence(conn: Connection, cutoffs: Sequence[datetime]) -> Iterator[HostPresence]:
    """Every enrolled host, with what its status needs (one pass over ``hosts``)."""
    observed = _observed()
    has_open = exists().where(findings.c.host_id == hosts.c.host_id, *counting())
    reported = and_(hosts.c.last_collected_at.is_not(None), hosts.c.last_received_at.is_not(None))
    older = [
        (observed < bindparam(f"cutoff_{i}", cutoff, type_=UTCDateTime())).label(f"older_{i}")
        for i, cutoff in enumerate(cutoffs)
    ]
    query = select(
        hosts.c.host_id,
        hosts.c.unit,
        reported.label("reported"),
        has_open.label("has_open"),
        *older,
    )
    for row in conn.execute(query):
        yield HostPresence(
            row[0], row[1], bool(row[2]), tuple(bool(v) for v in row[4:]), bool(row[3])
        )


def last_received(conn: Connection) -> datetime | None:
    """When the newest report of any host was received."""
    return conn.execute(select(func.max(hosts.c.last_received_at))).scalar_one_or_none()


def open_findings_by_unit(
    conn: Connection, now: datetime, *, leaving_out: Collection[str] = ()
) -> Iterator[OpenFindings]:
    """Open findings grouped by the unit their host enrolled into, rule and severity, and how
    many of them are overdue ``now``; the findings of the hosts ``leaving_out`` names are not
    counted."""
    query = (
        select(
            hosts.c.unit,
            findings.c.rule,
            findings.c.severity,
            func.count(),
            func.min(findings.c.first_seen),
            _overdue(now),
        )
        .select_from(findings.join(hosts, hosts.c.host_id == findings.c.host_id))
        .where(*counting())
        .group_by(hosts.c.unit, findings.c.rule, findings.c.severity)
    )
    if leaving_out:
        query = query.where(findings.c.host_id.not_in(bindparam("out", expanding=True)))
    params = {"out": sorted(leaving_out)} if leaving_out else {}
    for unit, rule, severity, count, oldest, overdue in conn.execute(query, params):
        yield OpenFindings(unit, rule, severity, int(count), oldest, int(overdue or 0))


def open_findings_of(
    conn: Connection, host_ids: Collection[str] | None, now: datetime
) -> Iterator[OpenFindings]:
    """Open findings of the hosts named (None: of every host), grouped by host, rule and
    severity, and how many of them are overdue ``now``."""
    query = (
        select(
            findings.c.host_id,
            findings.c.rule,
            findings.c.severity,
            func.count(),
            func.min(findings.c.first_seen),
            _overdue(now),
        )
        .where(*counting())
        .group_by(findings.c.host_id, findings.c.rule, findings.c.severity)
    )
    if host_ids is None:
        chunks: list[dict[str, list[str]]] = [{}]
    else:
        wanted = sorted(host_ids)
        query = query.where(findings.c.host_id.in_(bindparam("ids", expanding=True)))
        chunks = [{"ids": wanted[i : i + CHUNK]} for i in range(0, len(wanted), CHUNK)]
    for params in chunks:
        for host_id, rule, severity, count, oldest, overdue in conn.execute(query, params):
            yield OpenFindings(host_id, rule, severity, int(count), oldest, int(overdue or 0))


def vulnerabilities(conn: Connection) -> Iterator[Vulnerabilities]:
    """The vulnerabilities hosts carry, counted by severity and exploited (one pass over
    ``host_vulnerabilities``, which holds what each host carries now); nothing without
    vulnerability data."""
    query = select(
        host_vulnerabilities.c.severity, host_vulnerabilities.c.exploited, func.count()
    ).group_by(host_vulnerabilities.c.severity, host_vulnerabilities.c.exploited)
    for severity, exploited, count in conn.execute(query):
        yield Vulnerabilities(severity, bool(exploited), int(count))
