"""The fleet's hosts counted by unit and status, from counts kept as things change.

Database triggers (migration 0011) keep, in the transaction that changes them, each placed
host's ``reported`` and ``open_findings`` (findings open and not waived) on its row of
``host_placements``, and in ``fleet_tallies`` how many placed hosts each unit has of each
(reported, has an open finding) pair. Whatever writes (ingest, re-evaluation, casework,
waivers, a policy that moves hosts, a host removed) the counts follow, and reading them is a
few rows, not a pass over 100,000 hosts.

Only staleness depends on the clock: a host that reported is stale once its latest facts
are older than its report age allows. Those hosts are found through the index of when each
host's facts were true (``ix_hosts_observed``) and taken from their bucket, so that the cost
is that of the stale hosts, not of the fleet.

`recount` counts the same from scratch; tests hold the kept counts to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, literal, select

from fleetwatch.collector.storage.fleet import counting
from fleetwatch.collector.storage.placements import report_ages
from fleetwatch.collector.storage.tables import (
    OBSERVED,
    UTCDateTime,
    findings,
    fleet_tallies,
    host_placements,
    hosts,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import ColumnElement, Connection

STATUSES = ("compliant", "noncompliant", "stale", "never_reported")


@dataclass
class UnitHosts:
    """A unit's hosts ("" for none) by status."""

    unit: str
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def hosts(self) -> int:
        return sum(self.by_status.values())


def _moment(moment: datetime) -> ColumnElement[Any]:
    return literal(moment, UTCDateTime())


def hosts_by_status(
    conn: Connection, now: datetime, default_age: float, unit: str | None = None
) -> dict[str, UnitHosts]:
    """unit -> its hosts by status ``now`` (of one unit, if given), from the kept counts
    and the stale hosts alone."""
    query = select(
        fleet_tallies.c.unit, fleet_tallies.c.reported, fleet_tallies.c.has_open,
        fleet_tallies.c.hosts,
    ).where(fleet_tallies.c.hosts != 0)  # fmt: skip
    if unit is not None:
        query = query.where(fleet_tallies.c.unit == unit)
    units: dict[str, UnitHosts] = {}

    def add(name: str, status: str, count: int) -> None:
        counts = units.setdefault(name, UnitHosts(name)).by_status
        counts[status] = counts.get(status, 0) + count

    for name, reported, has_open, count in conn.execute(query):
        status = "never_reported" if not reported else ("noncompliant" if has_open else "compliant")
        add(name, status, int(count))
    for name, has_open, count in _stale(conn, now, default_age, unit):
        add(name, "stale", count)
        add(name, "noncompliant" if has_open else "compliant", -count)
    for counts in units.values():
        for status in STATUSES:
            counts.by_status.setdefault(status, 0)
    return units


def _stale(
    conn: Connection, now: datetime, default_age: float, unit: str | None
) -> list[tuple[str, bool, int]]:
    """(unit, has an open finding, how many) of the placed hosts that reported and are stale
    ``now``: the index of observed times gives the hosts older than the shortest report age
    allowed, each then held to its own."""
    ages = report_ages(conn)
    if not ages:
        return []
    cutoff = case(
        *(
            (host_placements.c.max_report_age == age, _moment(now - timedelta(seconds=age)))
            for age in ages
        ),
        else_=_moment(now - timedelta(seconds=default_age)),
    )
    has_open = case((host_placements.c.open_findings > 0, 1), else_=0)
    # the candidates first, from the index alone (materialized: else SQLite walks every
    # placement and probes its host instead)
    candidates = (
        select(hosts.c.host_id, OBSERVED.label("observed"))
        .where(OBSERVED < _moment(now - timedelta(seconds=min(ages))))  # noqa: SIM300  (a column)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    query = (
        select(host_placements.c.unit, has_open, func.count())
        .select_from(
            candidates.join(host_placements, host_placements.c.host_id == candidates.c.host_id)
        )
        .where(candidates.c.observed < cutoff, host_placements.c.reported == 1)
        .group_by(host_placements.c.unit, has_open)
    )
    if unit is not None:
        query = query.where(host_placements.c.unit == unit)
    return [(name or "", bool(flag), int(count)) for name, flag, count in conn.execute(query)]


def recount(conn: Connection) -> dict[tuple[str, int, int], int]:
    """(unit, reported, has an open finding) -> placed hosts, counted from every row (what
    the triggers keep in ``fleet_tallies``); for tests and for checking a database."""
    has_open = (
        select(findings.c.id)
        .where(findings.c.host_id == host_placements.c.host_id, *counting())
        .exists()
    )
    reported = (
        select(hosts.c.host_id)
        .where(hosts.c.host_id == host_placements.c.host_id, hosts.c.last_received_at.is_not(None))
        .exists()
    )
    listed = select(
        func.coalesce(host_placements.c.unit, "").label("unit"),
        case((reported, 1), else_=0).label("reported"),
        case((has_open, 1), else_=0).label("has_open"),
    ).subquery()
    rows = conn.execute(
        select(listed.c.unit, listed.c.reported, listed.c.has_open, func.count()).group_by(
            listed.c.unit, listed.c.reported, listed.c.has_open
        )
    )
    return {(u, int(r), int(o)): int(n) for u, r, o, n in rows}


def kept(conn: Connection) -> dict[tuple[str, int, int], int]:
    """What ``fleet_tallies`` holds, in the shape of `recount` (empty buckets left out)."""
    rows = conn.execute(select(fleet_tallies).where(fleet_tallies.c.hosts != 0))
    return {(r.unit, int(r.reported), int(r.has_open)): int(r.hosts) for r in rows}
