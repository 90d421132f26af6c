"""Snapshots of the fleet's counts, per unit, for the dashboard's overview and trends.

The housekeeper rewrites the ``live`` snapshot at every round and keeps one ``hour`` snapshot
an hour (for ``HOURS_KEPT``) and one ``day`` snapshot a day (for ``DAYS_KEPT``): a trend over
90 days reads 90 rows per unit, never a host or a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, func, insert, select

from fleetwatch.collector.storage.fleet_view import SEVERITIES, UnitCounts
from fleetwatch.collector.storage.tables import fleet_snapshots

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection

Kind = Literal["live", "hour", "day"]
HOURS_KEPT = timedelta(days=7)
DAYS_KEPT = timedelta(days=400)


@dataclass(frozen=True)
class Snapshot:
    """The counts of every unit at one moment."""

    taken_at: datetime
    units: list[UnitCounts] = field(default_factory=list)


def _period_of(kind: Kind, moment: datetime) -> tuple[datetime, datetime]:
    """The hour or the day a moment falls in: [start, end)."""
    if kind == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


class Snapshots:
    """The ``fleet_snapshots`` table."""

    def _insert(
        self, conn: Connection, kind: Kind, taken_at: datetime, units: Sequence[UnitCounts]
    ) -> None:
        if not units:
            return
        conn.execute(
            insert(fleet_snapshots),
            [
                {
                    "kind": kind,
                    "taken_at": taken_at,
                    "unit": u.unit,
                    "hosts": u.hosts,
                    "compliant": u.by_status.get("compliant", 0),
                    "noncompliant": u.by_status.get("noncompliant", 0),
                    "stale": u.by_status.get("stale", 0),
                    "never_reported": u.by_status.get("never_reported", 0),
                    **{f"open_{s}": u.open_by_severity.get(s, 0) for s in SEVERITIES},
                    "rules": u.open_by_rule,
                }
                for u in units
            ],
        )

    def record(self, conn: Connection, now: datetime, units: Sequence[UnitCounts]) -> list[Kind]:
        """Rewrite the live snapshot; add the hour's and the day's if not taken yet; drop
        those past keeping. The kinds written."""
        written: list[Kind] = ["live"]
        conn.execute(delete(fleet_snapshots).where(fleet_snapshots.c.kind == "live"))
        self._insert(conn, "live", now, units)
        for kind in ("hour", "day"):
            start, end = _period_of(kind, now)
            taken = conn.execute(
                select(func.count()).where(
                    fleet_snapshots.c.kind == kind,
                    fleet_snapshots.c.taken_at >= start,
                    fleet_snapshots.c.taken_at < end,
                )
            ).scalar_one()
            if not taken:
                self._insert(conn, kind, now, units)
                written.append(kind)
        for kind, kept in (("hour", HOURS_KEPT), ("day", DAYS_KEPT)):
            conn.execute(
                delete(fleet_snapshots).where(
                    fleet_snapshots.c.kind == kind, fleet_snapshots.c.taken_at < now - kept
                )
            )
        return written

    def units(self, conn: Connection) -> list[str]:
        """The units of the live snapshot (those that have hosts), sorted."""
        rows = conn.execute(
            select(fleet_snapshots.c.unit)
            .where(fleet_snapshots.c.kind == "live", fleet_snapshots.c.unit != "")
            .distinct()
            .order_by(fleet_snapshots.c.unit)
        )
        return [unit for (unit,) in rows]

    def totals(
        self, conn: Connection, kind: Kind, since: datetime, unit: str | None = None
    ) -> list[Snapshot]:
        """For trends: the counts summed over the units (or of one unit) at each moment since
        then, oldest first; one row a moment, without the counts by rule."""
        counted = ("hosts", "compliant", "noncompliant", "stale", "never_reported")
        severities = tuple(f"open_{s}" for s in SEVERITIES)
        query = select(
            fleet_snapshots.c.taken_at,
            *(func.sum(fleet_snapshots.c[name]).label(name) for name in counted + severities),
        ).where(fleet_snapshots.c.kind == kind, fleet_snapshots.c.taken_at >= since)
        if unit is not None:
            query = query.where(fleet_snapshots.c.unit == unit)
        rows = conn.execute(
            query.group_by(fleet_snapshots.c.taken_at).order_by(fleet_snapshots.c.taken_at)
        )
        return [
            Snapshot(
                row.taken_at,
                [
                    UnitCounts(
                        unit=unit or "",
                        hosts=int(row.hosts),
                        by_status={name: int(row._mapping[name]) for name in counted[1:]},
                        open_by_severity={s: int(row._mapping[f"open_{s}"]) for s in SEVERITIES},
                    )
                ],
            )
            for row in rows
        ]

    def series(
        self, conn: Connection, kind: Kind, since: datetime, unit: str | None = None
    ) -> list[Snapshot]:
        """Snapshots of a kind since a moment, oldest first; of one unit, or of every unit."""
        query = select(fleet_snapshots).where(
            fleet_snapshots.c.kind == kind, fleet_snapshots.c.taken_at >= since
        )
        if unit is not None:
            query = query.where(fleet_snapshots.c.unit == unit)
        by_moment: dict[datetime, Snapshot] = {}
        for row in conn.execute(query.order_by(fleet_snapshots.c.taken_at, fleet_snapshots.c.unit)):
            snapshot = by_moment.setdefault(row.taken_at, Snapshot(row.taken_at))
            snapshot.units.append(
                UnitCounts(
                    unit=row.unit,
                    hosts=row.hosts,
                    by_status={
                        "compliant": row.compliant,
                        "noncompliant": row.noncompliant,
                        "stale": row.stale,
                        "never_reported": row.never_reported,
                    },
                    open_by_severity={s: getattr(row, f"open_{s}") for s in SEVERITIES},
                    open_by_rule=dict(row.rules),
                )
            )
        return list(by_moment.values())
