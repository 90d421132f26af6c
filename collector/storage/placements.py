"""Where each host stands in the policy (unit, groups, report age allowed), in a table.

The policy lives in memory; the dashboard filters, counts and pages hosts in SQL, so the
housekeeper copies what the policy says of each host here (`replace` after a policy change,
`add_enrolled` for hosts enrolled since). Every host the policy lists or that enrolled has a
row; a host the policy does not list keeps the unit it enrolled into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, literal, select, update

from fleetwatch.collector.storage.tables import host_placements, hosts

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import Connection

BATCH = 5000


@dataclass(frozen=True)
class Placement:
    """What the policy says of one host."""

    host_id: str
    unit: str | None
    groups: tuple[str, ...]
    max_report_age: int
    listed: bool


def groups_column(groups: Iterable[str]) -> str:
    """Groups as stored: each name between spaces, so that LIKE '% name %' finds one."""
    return " " + " ".join(groups) + " "


class Placements:
    """The ``host_placements`` table."""

    def replace(self, conn: Connection, listed: Sequence[Placement], default_age: int) -> None:
        """Every row anew: the policy's hosts, then enrolled hosts it does not list."""
        conn.execute(delete(host_placements))
        for start in range(0, len(listed), BATCH):
            conn.execute(
                insert(host_placements),
                [
                    {
                        "host_id": p.host_id,
                        "unit": p.unit,
                        "groups": groups_column(p.groups),
                        "max_report_age": p.max_report_age,
                        "listed": int(p.listed),
                    }
                    for p in listed[start : start + BATCH]
                ],
            )
        # a listed host without a unit in the policy keeps the one it enrolled into
        enrolled_unit = (
            select(hosts.c.unit).where(hosts.c.host_id == host_placements.c.host_id)
        ).scalar_subquery()
        conn.execute(
            update(host_placements)
            .where(host_placements.c.unit.is_(None))
            .values(unit=enrolled_unit)
        )
        self.add_enrolled(conn, default_age)

    def add_enrolled(self, conn: Connection, default_age: int) -> int:
        """A row for each enrolled host that has none yet; how many were added."""
        missing = select(
            hosts.c.host_id,
            hosts.c.unit,
            literal(" "),
            literal(default_age),
            literal(0),
        ).where(
            ~select(host_placements.c.host_id)
            .where(host_placements.c.host_id == hosts.c.host_id)
            .exists()
        )
        done = conn.execute(
            insert(host_placements).from_select(
                ["host_id", "unit", "groups", "max_report_age", "listed"], missing
            )
        )
        return int(done.rowcount)

    def units(self, conn: Connection) -> list[str]:
        """Every unit a host is placed in, sorted."""
        rows = conn.execute(
            select(host_placements.c.unit)
            .where(host_placements.c.unit.is_not(None))
            .distinct()
            .order_by(host_placements.c.unit)
        )
        return [unit for (unit,) in rows]

    def ages(self, conn: Connection) -> list[int]:
        """The distinct report ages allowed (seconds): few, one per baseline that sets one."""
        rows = conn.execute(select(host_placements.c.max_report_age).distinct())
        return [age for (age,) in rows]
