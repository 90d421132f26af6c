"""The vulnerabilities each host carries now, as matching last found them.

Rows are replaced per host when the host is evaluated: a vulnerability still there keeps its
``first_seen``; one gone is deleted (its finding, if any, records its history).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from fleetwatch.collector.storage.tables import host_placements
from fleetwatch.collector.storage.tables import host_vulnerabilities as table

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from sqlalchemy import Connection

DELETE_CHUNK = 300


@dataclass(frozen=True)
class HostVulnerability:
    """One vulnerability on one host, in one source package."""

    host_id: str
    vuln: str
    source: str
    release: str
    installed_version: str
    fixed_version: str | None
    status: str
    severity: str | None
    urgency: str | None
    cvss: float | None
    fixable: bool
    exploited: bool
    flags: list[str]
    advisories: list[str]
    binaries: list[str]
    fix_since: datetime | None
    note: str | None
    first_seen: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.vuln, self.source)

    def same_as(self, other: HostVulnerability) -> bool:
        """Whether two rows say the same, but for when they were first seen."""
        return all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in fields(self)
            if f.name != "first_seen"
        )


_COLUMNS = tuple(f.name for f in fields(HostVulnerability))
_CHANGED = tuple(c for c in _COLUMNS if c not in {"host_id", "vuln", "source", "first_seen"})


@dataclass(frozen=True)
class VulnerabilityFilter:
    """What a listing filters on: hosts of a unit (``scope_unit``: the reader's, if limited
    to one; both by ``host_placements``), one host, one vulnerability, severities, and
    whether a pending update fixes it."""

    scope_unit: str | None = None
    unit: str | None = None
    host_id: str | None = None
    vuln: str | None = None
    severities: tuple[str, ...] | None = None
    fixable: bool | None = None


# A row's place in a listing: (host, vulnerability, source package), the primary key.
Position = tuple[str, str, str]


@dataclass(frozen=True)
class VulnerabilityPage:
    """One page of a listing: its rows, each row's host's unit, and the position of the
    last row if more follow."""

    rows: list[HostVulnerability]
    units: dict[str, str | None]
    next_after: Position | None


class HostVulnerabilities:
    """The ``host_vulnerabilities`` table."""

    def of_hosts(
        self, conn: Connection, host_ids: Iterable[str]
    ) -> dict[str, dict[tuple[str, str], HostVulnerability]]:
        """Each host's rows, by (vulnerability, source)."""
        wanted = sorted(set(host_ids))
        found: dict[str, dict[tuple[str, str], HostVulnerability]] = {h: {} for h in wanted}
        for start in range(0, len(wanted), DELETE_CHUNK):
            rows = conn.execute(
                select(table).where(table.c.host_id.in_(wanted[start : start + DELETE_CHUNK]))
            )
            for row in rows:
                item = HostVulnerability(**row._mapping)
                found[item.host_id][item.key] = item
        return found

    def apply(
        self,
        conn: Connection,
        added: Sequence[HostVulnerability],
        changed: Sequence[HostVulnerability],
        gone: Sequence[tuple[str, str, str]],
    ) -> None:
        """Insert, update (all but first_seen) and delete rows, a statement each."""
        if added:
            conn.execute(insert(table), [{c: getattr(v, c) for c in _COLUMNS} for v in added])
        if changed:
            conn.execute(
                update(table)
                .where(
                    table.c.host_id == bindparam("b_host_id"),
                    table.c.vuln == bindparam("b_vuln"),
                    table.c.source == bindparam("b_source"),
                )
                .values({c: bindparam(f"b_{c}") for c in _CHANGED}),
                [
                    {f"b_{c}": getattr(v, c) for c in (*_CHANGED, "host_id", "vuln", "source")}
                    for v in changed
                ],
            )
        for start in range(0, len(gone), DELETE_CHUNK):
            chunk = gone[start : start + DELETE_CHUNK]
            conn.execute(
                delete(table).where(
                    or_(
                        *(
                            and_(table.c.host_id == h, table.c.vuln == v, table.c.source == s)
                            for h, v, s in chunk
                        )
                    )
                )
            )

    def page(
        self,
        conn: Connection,
        wanted: VulnerabilityFilter,
        *,
        after: Position | None = None,
        limit: int = 500,
    ) -> VulnerabilityPage:
        """One page of rows in the primary key's order (host, vulnerability, source) after
        the position ``after``, every filter in SQL, and each row's host's unit.

        Keyset paging on the columns a filter leaves free: with one vulnerability asked for,
        the rows come from the index ``(vuln, host_id, source)`` in the same order, so a page
        deep into a CVE every host carries costs what the first does."""
        query = select(table)
        for wanted_unit in {wanted.scope_unit, wanted.unit} - {None}:
            # the unit's hosts, in order from the cursor's on, drive the primary key: no
            # sort, and no row of the hosts before the cursor read
            hosts_of_unit = select(host_placements.c.host_id).where(
                host_placements.c.unit == wanted_unit
            )
            if after is not None:
                hosts_of_unit = hosts_of_unit.where(host_placements.c.host_id >= after[0])
            query = query.where(table.c.host_id.in_(hosts_of_unit))
        if wanted.host_id is not None:
            query = query.where(table.c.host_id == wanted.host_id)
        if wanted.vuln is not None:
            query = query.where(table.c.vuln == wanted.vuln)
        if wanted.severities is not None:
            query = query.where(table.c.severity.in_(wanted.severities))
        if wanted.fixable is not None:
            query = query.where(table.c.fixable.is_(wanted.fixable))
        keys = [
            (table.c.host_id, wanted.host_id is None),
            (table.c.vuln, wanted.vuln is None),
            (table.c.source, True),
        ]
        free = [(column, index) for index, (column, is_free) in enumerate(keys) if is_free]
        if after is not None:
            columns = [column for column, _ in free]
            values = [literal(after[index]) for _, index in free]
            query = query.where(
                columns[0] > values[0] if len(free) == 1 else tuple_(*columns) > tuple_(*values)
            )
        query = query.order_by(*(column for column, _ in free)).limit(limit + 1)
        rows = [HostVulnerability(**r._mapping) for r in conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        # the page's hosts' units by their keys: joined in the statement, PostgreSQL would
        # merge with every placement up to the cursor's
        units: dict[str, str | None] = dict.fromkeys({r.host_id for r in rows})
        if units:
            units.update(
                conn.execute(
                    select(host_placements.c.host_id, host_placements.c.unit).where(
                        host_placements.c.host_id.in_(sorted(units))
                    )
                ).all()
            )
        last = rows[-1] if more and rows else None
        return VulnerabilityPage(
            rows, units, None if last is None else (last.host_id, last.vuln, last.source)
        )

    def counts(self, conn: Connection) -> tuple[int, int]:
        """(rows, hosts with at least one)."""
        rows, hosts = conn.execute(
            select(func.count(), func.count(table.c.host_id.distinct()))
        ).one()
        return int(rows), int(hosts)
