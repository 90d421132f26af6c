"""Waivers: findings of a rule, on a host, a unit or a group, excused until a date.

Both the waivers made through the API and those declared in the policy file live here; the
housekeeper keeps the policy's in step with the file (`compliance.waivers`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, insert, or_, select, union_all, update

from fleetwatch.collector.storage.tables import host_placements, waivers
from fleetwatch.collector.storage.transactions import among_given

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from sqlalchemy import Connection, Select


@dataclass(frozen=True)
class NewWaiver:
    """A waiver to record."""

    source: str  # "api" or "policy"
    name: str | None  # a policy waiver's name in the file
    scope: str  # host, unit or group
    target: str
    rule: str
    pattern: str
    reason: str
    owner: str
    created_by: str
    created_at: datetime
    expires_at: datetime


_NEW_COLUMNS = tuple(f.name for f in fields(NewWaiver))


@dataclass(frozen=True, kw_only=True)
class WaiverRow(NewWaiver):
    """A stored waiver."""

    id: int
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    expiring_announced_at: datetime | None = None
    expired_announced_at: datetime | None = None

    def is_in_force(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at


@functools.lru_cache(maxsize=2)
def _in_force_over(dialect: str) -> Select[Any]:
    """Waivers in force at ``:now`` over hosts ``:hosts``, units ``:units`` or groups
    ``:groups``: built once per database kind (it runs with every batch of reports)."""
    reach = [
        and_(waivers.c.scope == scope, among_given(dialect, waivers.c.target, name))
        for scope, name in (("host", "hosts"), ("unit", "units"), ("group", "groups"))
    ]
    return (
        select(waivers)
        .where(
            waivers.c.revoked_at.is_(None),
            waivers.c.expires_at > bindparam("now", type_=waivers.c.expires_at.type),
            or_(*reach),
        )
        .order_by(waivers.c.id)
    )


class Waivers:
    """The ``waivers`` table."""

    def add(self, conn: Connection, new: NewWaiver) -> WaiverRow:
        row = conn.execute(
            insert(waivers)
            .values({name: getattr(new, name) for name in _NEW_COLUMNS})
            .returning(*waivers.c)
        ).one()
        return WaiverRow(**row._mapping)

    def get(self, conn: Connection, waiver_id: int) -> WaiverRow | None:
        row = conn.execute(select(waivers).where(waivers.c.id == waiver_id)).first()
        return None if row is None else WaiverRow(**row._mapping)

    def in_force(self, conn: Connection, now: datetime) -> list[WaiverRow]:
        """Waivers neither revoked nor expired, oldest first."""
        rows = conn.execute(
            select(waivers)
            .where(waivers.c.revoked_at.is_(None), waivers.c.expires_at > now)
            .order_by(waivers.c.id)
        )
        return [WaiverRow(**r._mapping) for r in rows]

    def in_force_over(
        self,
        conn: Connection,
        now: datetime,
        *,
        hosts: Iterable[str],
        units: Iterable[str],
        groups: Iterable[str],
    ) -> list[WaiverRow]:
        """Waivers in force that may cover these hosts (by host, unit or group): what one
        batch of reports needs, however many waivers the fleet holds."""
        rows = conn.execute(
            _in_force_over(conn.dialect.name),
            {
                "now": now,
                "hosts": sorted(set(hosts)),
                "units": sorted(set(units)),
                "groups": sorted(set(groups)),
            },
        )
        return [WaiverRow(**r._mapping) for r in rows]

    def of_policy(self, conn: Connection) -> dict[str, WaiverRow]:
        """The policy's waivers not revoked, by name."""
        rows = conn.execute(
            select(waivers).where(waivers.c.source == "policy", waivers.c.revoked_at.is_(None))
        )
        return {r.name: WaiverRow(**r._mapping) for r in rows}

    def page(
        self,
        conn: Connection,
        *,
        now: datetime,
        include_ended: bool = False,
        unit: str | None = None,
        before: int | None = None,
        limit: int = 500,
    ) -> tuple[list[WaiverRow], int | None]:
        """One page of waivers in force (or every one), newest first (by id, the primary
        key's order), before the id ``before``; and the id to page on from, if more follow.
        ``unit``: only that unit's waivers and its hosts' (as `CaseWork.waiver_unit` places
        them: a host by ``host_placements``), never a group's, which may span units."""
        conditions = []
        if not include_ended:
            conditions += [waivers.c.revoked_at.is_(None), waivers.c.expires_at > now]
        if before is not None:
            conditions.append(waivers.c.id < before)
        query = select(waivers).where(*conditions).order_by(waivers.c.id.desc()).limit(limit + 1)
        if unit is not None:
            # the unit's own and its hosts', each through the index of targets: a unit's
            # waivers sorted, not the fleet's read newest first until the page fills
            hosts_of_unit = select(host_placements.c.host_id).where(host_placements.c.unit == unit)
            reach = (
                and_(waivers.c.scope == "unit", waivers.c.target == unit),
                and_(waivers.c.scope == "host", waivers.c.target.in_(hosts_of_unit)),
            )
            parts = [select(query.where(r).subquery()) for r in reach]
            both = union_all(*parts).subquery()
            query = select(both).order_by(both.c.id.desc()).limit(limit + 1)
        rows = [WaiverRow(**r._mapping) for r in conn.execute(query)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    def set(self, conn: Connection, waiver_id: int, **values: Any) -> None:
        conn.execute(update(waivers).where(waivers.c.id == waiver_id).values(**values))

    def expiring(self, conn: Connection, now: datetime, until: datetime) -> list[WaiverRow]:
        """Waivers in force that expire by ``until`` and were not yet announced as expiring."""
        rows = conn.execute(
            select(waivers)
            .where(
                waivers.c.revoked_at.is_(None),
                waivers.c.expires_at > now,
                waivers.c.expires_at <= until,
                waivers.c.expiring_announced_at.is_(None),
            )
            .order_by(waivers.c.id)
        )
        return [WaiverRow(**r._mapping) for r in rows]

    def expired(self, conn: Connection, now: datetime) -> list[WaiverRow]:
        """Waivers past their expiry, not revoked, not yet announced as expired."""
        rows = conn.execute(
            select(waivers)
            .where(
                waivers.c.revoked_at.is_(None),
                waivers.c.expires_at <= now,
                or_(waivers.c.expired_announced_at.is_(None)),
            )
            .order_by(waivers.c.id)
        )
        return [WaiverRow(**r._mapping) for r in rows]
