"""The vulnerabilities each host carries now, as matching last found them.

Rows are replaced per host when the host is evaluated: a vulnerability still there keeps its
``first_seen``; one gone is deleted (its finding, if any, records its history).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update

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
class Page:
    """Filters of a listing."""

    host_ids: list[str] | None = None
    vuln: str | None = None
    severities: list[str] | None = None
    fixable: bool | None = None
    limit: int = 1000
    offset: int = 0


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

    def query(self, conn: Connection, page: Page) -> list[HostVulnerability]:
        """Rows by host, vulnerability, severity and fixability, in a stable order."""
        query = select(table)
        if page.host_ids is not None:
            query = query.where(table.c.host_id.in_(page.host_ids))
        if page.vuln is not None:
            query = query.where(table.c.vuln == page.vuln)
        if page.severities is not None:
            query = query.where(table.c.severity.in_(page.severities))
        if page.fixable is not None:
            query = query.where(table.c.fixable.is_(page.fixable))
        query = (
            query.order_by(table.c.host_id, table.c.source, table.c.vuln)
            .limit(page.limit)
            .offset(page.offset)
        )
        return [HostVulnerability(**r._mapping) for r in conn.execute(query)]

    def counts(self, conn: Connection) -> tuple[int, int]:
        """(rows, hosts with at least one)."""
        rows, hosts = conn.execute(
            select(func.count(), func.count(table.c.host_id.distinct()))
        ).one()
        return int(rows), int(hosts)
