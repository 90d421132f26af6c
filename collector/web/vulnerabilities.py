"""The vulnerability API: which hosts carry which vulnerabilities, and what data is loaded.

    GET /api/v1/vulnerabilities?host_id=&unit=&cve=&severity=&fixable=&limit=&cursor=
    GET /api/v1/vulnerabilities/{cve}?limit=&cursor=   the hosts (the caller may see) carrying it
    GET /api/v1/vulnerability-data           the data sets loaded: source, time, counts

Scoped like the rest of the read API: a token limited to a unit sees that unit's hosts only.
Both lists page by cursor (`web.paging`), every filter and the unit scope applied in SQL.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from fleetwatch.collector.refusals import InvalidCursor
from fleetwatch.collector.storage.host_vulnerabilities import VulnerabilityFilter
from fleetwatch.collector.web import paging
from fleetwatch.collector.web.bearer import Reader, fleet_reader
from fleetwatch.collector.web.paging import DEFAULT_LIMIT, CursorParam, Limit, Offset
from fleetwatch.collector.web.routes import service
from fleetwatch.schema import HostId  # noqa: TC001  (FastAPI reads annotations)

if TYPE_CHECKING:
    from fleetwatch.collector.storage.host_vulnerabilities import (
        HostVulnerability,
        VulnerabilityPage,
    )

router = APIRouter()
Severity = Literal["low", "medium", "high", "critical"]
VulnId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


class VulnerabilityView(BaseModel):
    """One vulnerability one host carries, in one source package."""

    host_id: str
    unit: str | None
    vuln: str = Field(description="CVE id (or the advisory's own id when it names no CVE).")
    source: str = Field(description="Source package.")
    release: str
    installed_version: str
    fixed_version: str | None = Field(description="None: no fix in the release yet.")
    status: str = Field(description="open, resolved (fixed in fixed_version) or undetermined.")
    severity: str | None = Field(description="From the data; None when not rated yet.")
    urgency: str | None = Field(description="Debian's urgency or Ubuntu's priority.")
    cvss: float | None
    fixable: bool = Field(description="A pending update (or an installed kernel) has the fix.")
    exploited: bool = Field(description="Listed in CISA's Known Exploited Vulnerabilities.")
    flags: list[str] = Field(description="unimportant, no-dsa, postponed, end-of-life...")
    advisories: list[str]
    binaries: list[str] = Field(description="The host's binary packages of the source.")
    fix_since: datetime | None = Field(
        description="When the fix became available (advisory date, else when the data first "
        "had it); None for a fix older than the first import."
    )
    note: str | None
    first_seen: datetime

    @classmethod
    def of(cls, row: HostVulnerability, unit: str | None) -> VulnerabilityView:
        return cls(unit=unit, **{k: getattr(row, k) for k in cls.model_fields if k != "unit"})


class VulnerabilityHosts(BaseModel):
    """A vulnerability and every host carrying it."""

    vuln: str
    exploited_since: str | None = Field(description="Date CISA added it to KEV, if it did.")
    hosts: list[VulnerabilityView]


class DatasetView(BaseModel):
    name: str
    source: str
    imported_at: datetime
    counts: dict[str, int]


class VulnerabilityData(BaseModel):
    """The vulnerability data the collector holds."""

    datasets: list[DatasetView]
    loaded_entries: int = Field(description="Entries this process holds in memory.")
    hosts_affected: int
    host_vulnerabilities: int


def _page(
    request: Request,
    response: Response,
    listing: str,
    wanted: VulnerabilityFilter,
    limit: int,
    cursor: str | None,
) -> VulnerabilityPage:
    """One page of a vulnerability listing; the next page's cursor in the headers."""
    filters = dataclasses.asdict(wanted)
    after = None
    if cursor is not None:
        position = paging.decode(cursor, listing, filters, 3)
        if not all(isinstance(key, str) for key in position):
            raise InvalidCursor("cursor does not hold a position in this list")
        after = (position[0], position[1], position[2])
    svc = service(request)
    with svc.store.read() as conn:
        page = svc.store.host_vulnerabilities.page(conn, wanted, after=after, limit=limit)
    if page.next_after is not None:
        following = paging.encode(listing, filters, list(page.next_after))
        paging.next_page(request, response, following)
    return page


def _views(page: VulnerabilityPage) -> list[VulnerabilityView]:
    return [VulnerabilityView.of(r, page.units.get(r.host_id)) for r in page.rows]


@router.get("/api/v1/vulnerabilities", response_model=list[VulnerabilityView], tags=["read"])
def list_vulnerabilities(  # noqa: PLR0913, PLR0917  (one parameter per query filter)
    request: Request,
    response: Response,
    principal: Reader,
    host_id: HostId | None = None,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    cve: Annotated[str | None, Query(max_length=128)] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    fixable: bool | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
    offset: Offset = None,
) -> list[VulnerabilityView]:
    """Vulnerabilities hosts carry now, by host, unit, CVE, severity (repeatable) and whether
    a pending update fixes them, in order of host, CVE and source package: one page; the next
    page's cursor in ``X-Next-Cursor`` and ``Link``."""
    paging.no_offset(offset)
    wanted = VulnerabilityFilter(
        scope_unit=principal.unit,
        unit=unit,
        host_id=host_id,
        vuln=cve,
        severities=tuple(sorted(set(severity))) if severity else None,
        fixable=fixable,
    )
    return _views(_page(request, response, "vulnerabilities", wanted, limit, cursor))


@router.get("/api/v1/vulnerabilities/{cve}", response_model=VulnerabilityHosts, tags=["read"])
def vulnerability_hosts(
    request: Request,
    response: Response,
    cve: VulnId,
    principal: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> VulnerabilityHosts:
    """The hosts carrying a vulnerability (that the caller may see), a page of them in
    ``hosts`` (the next page's cursor in ``X-Next-Cursor`` and ``Link``), and when CISA
    listed it as exploited."""
    svc = service(request)
    wanted = VulnerabilityFilter(scope_unit=principal.unit, vuln=cve)
    page = _page(request, response, "vulnerability-hosts", wanted, limit, cursor)
    return VulnerabilityHosts(
        vuln=cve,
        exploited_since=svc.vulnerabilities.index.exploited.get(cve),
        hosts=_views(page),
    )


@router.get(
    "/api/v1/vulnerability-data",
    response_model=VulnerabilityData,
    tags=["read"],
    dependencies=[Depends(fleet_reader)],
)
def vulnerability_data(request: Request) -> VulnerabilityData:
    """The data sets loaded, from where and when, and how many hosts they find affected."""
    svc = service(request)
    svc.vulnerabilities.refresh()
    with svc.store.read() as conn:
        infos = svc.store.vulnerability_data.infos(conn)
        rows, hosts = svc.store.host_vulnerabilities.counts(conn)
    return VulnerabilityData(
        datasets=[
            DatasetView(name=i.name, source=i.source, imported_at=i.imported_at, counts=i.counts)
            for i in infos
        ],
        loaded_entries=len(svc.vulnerabilities.index),
        hosts_affected=hosts,
        host_vulnerabilities=rows,
    )


__all__ = ["router"]
