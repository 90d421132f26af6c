"""The vulnerability API: which hosts carry which vulnerabilities, and what data is loaded.

    GET /api/v1/vulnerabilities?host_id=&unit=&cve=&severity=&fixable=&limit=&offset=
    GET /api/v1/vulnerabilities/{cve}        every host (the caller may see) carrying it
    GET /api/v1/vulnerability-data           the data sets loaded: source, time, counts

Scoped like the rest of the read API: a token limited to a unit sees that unit's hosts only.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from fleetwatch.collector.storage.host_vulnerabilities import Page
from fleetwatch.collector.web.bearer import Reader, fleet_reader
from fleetwatch.collector.web.routes import MAX_ID, service
from fleetwatch.schema import HostId  # noqa: TC001  (FastAPI reads annotations)

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Principal
    from fleetwatch.collector.service import CollectorService
    from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerability

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


def _visible(
    svc: CollectorService, principal: Principal, unit: str | None, host_id: str | None
) -> dict[str, str | None] | None:
    """host -> unit of the hosts the caller may see and asked for; None: every host."""
    if unit is None and principal.unit is None and host_id is None:
        return None
    policy = svc.policy.current
    with svc.store.read() as conn:
        hosts = {h.host_id: h.unit for h in svc.store.hosts.all(conn)}
    visible = {}
    for name, enrolled_unit in hosts.items():
        host_unit = policy.for_host(name).unit or enrolled_unit
        if (
            principal.may_see(host_unit)
            and (unit is None or host_unit == unit)
            and (host_id is None or name == host_id)
        ):
            visible[name] = host_unit
    return visible


def _units(svc: CollectorService, rows: list[HostVulnerability]) -> dict[str, str | None]:
    policy = svc.policy.current
    with svc.store.read() as conn:
        enrolled = {h.host_id: h.unit for h in svc.store.hosts.all(conn)}
    return {r.host_id: policy.for_host(r.host_id).unit or enrolled.get(r.host_id) for r in rows}


@router.get("/api/v1/vulnerabilities", response_model=list[VulnerabilityView], tags=["read"])
def list_vulnerabilities(  # noqa: PLR0913, PLR0917  (one parameter per query filter)
    request: Request,
    principal: Reader,
    host_id: HostId | None = None,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    cve: Annotated[str | None, Query(max_length=128)] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    fixable: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[VulnerabilityView]:
    """Vulnerabilities hosts carry now, by host, unit, CVE, severity (repeatable) and whether
    a pending update fixes them; in pages of ``limit`` from ``offset``."""
    svc = service(request)
    visible = _visible(svc, principal, unit, host_id)
    page = Page(
        host_ids=None if visible is None else sorted(visible),
        vuln=cve,
        severities=list(severity) if severity else None,
        fixable=fixable,
        limit=limit,
        offset=offset,
    )
    with svc.store.read() as conn:
        rows = svc.store.host_vulnerabilities.query(conn, page)
    units = visible if visible is not None else _units(svc, rows)
    return [VulnerabilityView.of(r, units.get(r.host_id)) for r in rows]


@router.get("/api/v1/vulnerabilities/{cve}", response_model=VulnerabilityHosts, tags=["read"])
def vulnerability_hosts(request: Request, cve: VulnId, principal: Reader) -> VulnerabilityHosts:
    """Every host carrying a vulnerability (that the caller may see)."""
    svc = service(request)
    visible = _visible(svc, principal, None, None)
    page = Page(host_ids=None if visible is None else sorted(visible), vuln=cve, limit=100_000)
    with svc.store.read() as conn:
        rows = svc.store.host_vulnerabilities.query(conn, page)
    units = visible if visible is not None else _units(svc, rows)
    return VulnerabilityHosts(
        vuln=cve,
        exploited_since=svc.vulnerabilities.index.exploited.get(cve),
        hosts=[VulnerabilityView.of(r, units.get(r.host_id)) for r in rows],
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
