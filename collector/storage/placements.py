"""Where each host stands in the policy (unit, groups, report age allowed), in a table.

The policy lives in memory; the dashboard filters, counts and pages hosts in SQL, so the
housekeeper copies what the policy says of each host here (`replace` after a policy change,
`add_enrolled` for hosts enrolled since). Every host the policy lists or that enrolled has a
row; a host the policy does not list keeps the unit it enrolled into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, literal, select

from fleetwatch.collector.storage.tables import host_placements, hosts

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import Connection

BATCH = 5000
# what the policy says of a host (the table's other columns are kept by triggers)
POLICY_COLUMNS = ("host_id", "unit", "groups", "max_report_age", "listed")


@dataclass(frozen=True)
class Placement:
    """What the policy says of one host."""

    host_id: str
    unit: str | None
    groups: tuple[str, ...]
    max_report_age: int
    listed: bool


def report_ages(conn: Connection) -> list[int]:
    """The distinct report ages allowed (seconds), found by hopping along their index from
    one to the next larger (a handful of probes), not by reading every host's row."""
    column = host_placements.c.max_report_age
    first = select(func.min(column).label("age")).cte("ages", recursive=True)
    following = select(
        select(func.min(column)).where(column > first.c.age).scalar_subquery()
    ).where(first.c.age.is_not(None))
    ages = first.union_all(following)
    rows = conn.execute(select(ages.c.age).where(ages.c.age.is_not(None)))
    return [int(age) for (age,) in rows]


def groups_column(groups: Iterable[str]) -> str:
    """Groups as stored: each name between spaces, so that LIKE '% name %' finds one."""
    return " " + " ".join(groups) + " "


class Placements:
    """The ``host_placements`` table."""

    def replace(self, conn: Connection, listed: Sequence[Placement], default_age: int) -> int:
        """Every row as the policy says now: the policy's hosts, then enrolled hosts it does
        not list. Only the rows that differ are written (a new lease holder, or a policy
        that changed a few hosts, rewrites a few rows, not 100,000). How many were written."""
        enrolled_units = dict(conn.execute(select(hosts.c.host_id, hosts.c.unit)).all())
        wanted = {
            p.host_id: {
                "host_id": p.host_id,
                # a listed host without a unit in the policy keeps the one it enrolled into
                "unit": p.unit if p.unit is not None else enrolled_units.get(p.host_id),
                "groups": groups_column(p.groups),
                "max_report_age": p.max_report_age,
                "listed": int(p.listed),
            }
            for p in listed
        }
        for host_id, unit in enrolled_units.items():
            wanted.setdefault(
                host_id,
                {
                    "host_id": host_id,
                    "unit": unit,
                    "groups": " ",
                    "max_report_age": default_age,
                    "listed": 0,
                },
            )
        policy_columns = [host_placements.c[name] for name in POLICY_COLUMNS]
        held = {row.host_id: dict(row._mapping) for row in conn.execute(select(*policy_columns))}
        gone = [host_id for host_id in held if host_id not in wanted]
        changed = [row for host_id, row in wanted.items() if held.get(host_id) != row]
        for start in range(0, len(gone), BATCH):
            conn.execute(
                delete(host_placements).where(
                    host_placements.c.host_id.in_(gone[start : start + BATCH])
                )
            )
        stale = [row["host_id"] for row in changed if row["host_id"] in held]
        for start in range(0, len(stale), BATCH):
            conn.execute(
                delete(host_placements).where(
                    host_placements.c.host_id.in_(stale[start : start + BATCH])
                )
            )
        for start in range(0, len(changed), BATCH):
            conn.execute(insert(host_placements), changed[start : start + BATCH])
        return len(gone) + len(changed)

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

    def add_one(self, conn: Connection, host_id: str, unit: str | None, default_age: int) -> bool:
        """A row for a host just enrolled, unless it has one (the policy lists it): so that
        lists read from this table show it before the housekeeper's next round."""
        held = conn.execute(
            select(host_placements.c.host_id).where(host_placements.c.host_id == host_id)
        ).first()
        if held is not None:
            return False
        conn.execute(
            insert(host_placements).values(
                host_id=host_id, unit=unit, groups=" ", max_report_age=default_age, listed=0
            )
        )
        return True

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
        return report_ages(conn)
