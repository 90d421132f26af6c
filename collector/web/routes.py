"""The HTTP API under ``/api/v1``: agents enroll and report; admins and readers look.

Each route states the caller it needs as a dependency (`web.bearer`); the front door
(`web.front_door`) checks it from the headers, and bounds the body, before a route runs.
Agent bodies are read by hand (`read_body`) so that compression is under our control before
a byte is parsed.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.compliance.placement import default_age
from fleetwatch.collector.ingest.parse import validation_detail
from fleetwatch.collector.refusals import (
    InvalidCursor,
    NoSuchHost,
    NoSuchToken,
    SchemaViolation,
)
from fleetwatch.collector.storage.fleet_view import (
    FindingQuery,
    FleetView,
    HostFilter,
    HostSort,
    Scope,
    finding_rows,
)
from fleetwatch.collector.storage.hosts import INLINE_SECTIONS
from fleetwatch.collector.web import paging
from fleetwatch.collector.web.bearer import (
    CallingHost,
    Reader,
    admin,
    admin_write,
    fleet_reader,
)
from fleetwatch.collector.web.bodies import read_body
from fleetwatch.collector.web.paging import DEFAULT_LIMIT, CursorParam, Limit
from fleetwatch.collector.web.views import (
    FindingView,
    HostDetail,
    HostSummary,
    NewToken,
    PolicyReload,
    PolicyState,
    ReenrollRequest,
    ReportView,
    RotatedToken,
    SectionView,
    Status,
    TokenRequest,
    TokenView,
    host_summary,
)
from fleetwatch.schema import EnrollRequest, EnrollResponse, HostId

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Principal
    from fleetwatch.collector.service import CollectorService

router = APIRouter()
MAX_ID = 2**62  # database ids and offsets are 64-bit integers


def service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


def _json(model: BaseModel) -> Response:
    return Response(content=model.model_dump_json(), media_type="application/json")


# -- agents -------------------------------------------------------------------------------


@router.post(
    "/api/v1/enroll",
    response_model=EnrollResponse,
    tags=["agent"],
    openapi_extra={"x-fleetwatch-body": "EnrollRequest"},
)
async def enroll(request: Request) -> Response:
    """Exchange an enrollment secret for a host token (once per host)."""
    svc = service(request)
    client = request.client.host if request.client else "?"
    await run_in_threadpool(svc.identity.count_enrollment, client)
    body = await read_body(request, svc.settings.max_api_body_bytes, svc.settings.body_timeout)
    try:
        enrollment = EnrollRequest.model_validate_json(body)
    except ValidationError as exc:
        raise SchemaViolation(validation_detail(exc)) from exc
    token = await run_in_threadpool(
        svc.identity.enroll, enrollment.host_id, enrollment.enroll_secret
    )
    return _json(EnrollResponse(token=token))


@router.post("/api/v1/token/rotate", response_model=RotatedToken, tags=["agent"])
async def rotate_token(request: Request, host: CallingHost) -> Response:
    """A new token for the calling host; the old one is revoked once the new one is used."""
    svc = service(request)
    fresh = await run_in_threadpool(svc.identity.rotate, host.host_id, host.token)
    return _json(RotatedToken(token=fresh))


# -- reading ------------------------------------------------------------------------------


@router.get("/api/v1/hosts", response_model=list[HostSummary], tags=["read"])
def list_hosts(  # noqa: PLR0913, PLR0917  (one parameter per query filter)
    request: Request,
    response: Response,
    principal: Reader,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    status: Status | None = None,
    group: Annotated[str | None, Query(max_length=255)] = None,
    text: Annotated[
        str | None, Query(max_length=255, description="Part of the host id or unit")
    ] = None,
    sort: HostSort = "host",
    desc: bool = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> list[HostSummary]:
    """Hosts the collector knows of, from the policy or by enrollment, with their status:
    one page, in order of ``sort`` (then host id); the next page's cursor is in the
    ``X-Next-Cursor`` and ``Link`` headers."""
    svc = service(request)
    wanted = HostFilter(unit=unit, group=group, status=status, text=text)
    filters = {**dataclasses.asdict(wanted), "sort": sort, "desc": desc}
    after = None
    if cursor is not None:
        value, host_id = paging.decode(cursor, "hosts", filters, 2)
        if not isinstance(value, str) or not isinstance(host_id, str):
            raise InvalidCursor("cursor does not hold a position in this list")
        after = (value, host_id)
    policy = svc.policy.current
    with svc.store.read() as conn:
        page = FleetView(conn, default_age(policy)).host_page(
            Scope(principal.unit), wanted, sort=sort, descending=desc, after=after, limit=limit
        )
    following = None if page.next_after is None else list(page.next_after)
    paging.next_page(
        request, response, None if following is None else paging.encode("hosts", filters, following)
    )
    return [
        HostSummary(
            host_id=line.host_id,
            unit=line.unit,
            groups=list(line.groups),
            status=line.status,
            last_report_at=line.last_report_at,
            agent_version=line.agent_version,
            open_findings=line.open_findings,
            open_by_severity=line.open_by_severity,
            in_policy=line.listed,
            enrolled=line.enrolled,
        )
        for line in page.lines
    ]


def _visible_host(svc: CollectorService, principal: Principal, host_id: str) -> None:
    """Refuse a host the collector does not know or the caller may not see (one host's
    lookup, not the fleet's)."""
    policy = svc.policy.current
    with svc.store.read() as conn:
        host = svc.store.hosts.get(conn, host_id)
    if host is None and host_id not in policy.hosts:
        raise NoSuchHost(f"no host {host_id!r}")
    unit = policy.for_host(host_id).unit or (host.unit if host else None)
    if not principal.may_see(unit):
        raise NoSuchHost(f"no host {host_id!r}")


@router.get("/api/v1/hosts/{host_id}", response_model=HostDetail, tags=["read"])
def get_host(request: Request, host_id: HostId, principal: Reader, data: bool = True) -> HostDetail:
    """A host's latest state: every section as last reported, and its open findings."""
    svc = service(request)
    now = datetime.now(UTC)
    policy = svc.policy.current
    with svc.store.read() as conn:
        host = svc.store.hosts.get(conn, host_id)
        if host is None and host_id not in policy.hosts:
            raise NoSuchHost(f"no host {host_id!r}")
        findings = svc.store.findings.query(conn, host_ids=[host_id], is_open=True)
        sections = {}
        for name, state in (host.sections if host else {}).items():
            content = None
            if data and state.hash:
                payload = (
                    host.inline.get(name)
                    if host is not None and name in INLINE_SECTIONS
                    else svc.store.blobs.get(conn, state.hash)
                )
                content = json.loads(payload) if payload else None
            sections[name] = SectionView.of(state, content)
    counts: dict[str, int] = {}
    for finding in findings:
        if not finding.waived:  # a waived finding does not count against its host
            counts[finding.severity] = counts.get(finding.severity, 0) + 1
    summary = host_summary(host_id, host, counts, policy, now)
    if not principal.may_see(summary.unit):
        raise NoSuchHost(f"no host {host_id!r}")
    return HostDetail.of(summary, host, sections, findings)


@router.get("/api/v1/hosts/{host_id}/reports", response_model=list[ReportView], tags=["read"])
def list_reports(
    request: Request,
    response: Response,
    host_id: HostId,
    principal: Reader,
    limit: Limit = DEFAULT_LIMIT,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Report id to page back from")
    ] = None,
    cursor: CursorParam = None,
) -> list[ReportView]:
    """Reports received from a host, newest first: sequence, collection and receive time;
    the next page's cursor in ``X-Next-Cursor`` and ``Link``.

    Reports that brought nothing new after one that did are not listed one by one: the entry
    of that report stands for them up to its `through` sequence.
    """
    svc = service(request)
    _visible_host(svc, principal, host_id)
    filters = {"host": host_id}
    if cursor is not None:
        (before,) = paging.decode(cursor, "reports", filters, 1)
        if not isinstance(before, int):
            raise InvalidCursor("cursor does not hold a position in this list")
    with svc.store.read() as conn:
        rows = svc.store.reports.of_host(conn, host_id, limit + 1, before)
    if len(rows) > limit:
        rows = rows[:limit]
        paging.next_page(request, response, paging.encode("reports", filters, [rows[-1].id]))
    return [ReportView.model_validate(r) for r in rows]


@router.get("/api/v1/findings", response_model=list[FindingView], tags=["read"])
def list_findings(  # noqa: PLR0913, PLR0917  (one parameter per query filter)
    request: Request,
    response: Response,
    principal: Reader,
    host_id: HostId | None = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    is_open: Annotated[bool | None, Query(alias="open")] = None,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = DEFAULT_LIMIT,
    state: Literal["open", "acknowledged", "resolved", "verified"] | None = None,
    waived: bool | None = None,
    overdue: bool = False,
    severity: Literal["critical", "high", "medium", "low"] | None = None,
    cursor: CursorParam = None,
) -> list[FindingView]:
    """Findings, open and resolved, oldest first, filtered by host, rule, severity, state,
    unit, waived or not, and overdue (open, not waived, past the due date): one page; the
    next page's cursor in ``X-Next-Cursor`` and ``Link``."""
    svc = service(request)
    now = datetime.now(UTC)
    wanted = FindingQuery(
        scope_unit=principal.unit,
        unit=unit,
        host_id=host_id,
        rule=rule,
        severity=severity,
        is_open=is_open,
        state=state,
        waived=waived,
        overdue_at=now if overdue else None,
    )
    filters = {**dataclasses.asdict(wanted), "overdue_at": overdue}
    after = None
    if cursor is not None:
        (after,) = paging.decode(cursor, "findings", filters, 1)
        if not isinstance(after, int):
            raise InvalidCursor("cursor does not hold a position in this list")
    with svc.store.read() as conn:
        rows, last = finding_rows(conn, wanted, after=after, limit=limit)
    if last is not None:
        paging.next_page(request, response, paging.encode("findings", filters, [last]))
    return [FindingView.of(r, now) for r in rows]


# -- administration -----------------------------------------------------------------------


@router.get(
    "/api/v1/policy",
    response_model=PolicyState,
    tags=["admin"],
    dependencies=[Depends(fleet_reader)],
)
def get_policy(request: Request) -> PolicyState:
    """The policy in force, and why a newer file was not loaded, if it was not (the fleet's
    policy: not for a token limited to a unit)."""
    source = service(request).policy
    return PolicyState(
        source=source.current.source,
        digest=source.current.digest,
        error=source.error,
        hosts=len(source.current.hosts),
        groups=sorted(source.current.groups),
    )


@router.post(
    "/api/v1/policy/reload",
    response_model=PolicyReload,
    tags=["admin"],
    dependencies=[Depends(admin_write)],
)
def reload_policy(request: Request) -> PolicyReload:
    """Read the policy file now and evaluate every host against it if it changed."""
    svc = service(request)
    changed, count = svc.reload_policy()
    return PolicyReload(changed=changed, hosts_evaluated=count, error=svc.policy.error)


@router.post(
    "/api/v1/hosts/{host_id}/allow-reenroll", tags=["admin"], dependencies=[Depends(admin_write)]
)
def allow_reenroll(
    request: Request,
    host_id: HostId,
    body: ReenrollRequest | None = None,
) -> dict[str, str]:
    """Let an enrolled host enroll again (after losing its state) within a time window."""
    minutes = (body or ReenrollRequest()).minutes
    if not service(request).identity.allow_reenroll(host_id, minutes):
        raise NoSuchHost(f"no enrolled host {host_id!r}")
    return {"detail": f"{host_id} may enroll again within {minutes:g} minutes"}


@router.post("/api/v1/hosts/{host_id}/revoke", tags=["admin"], dependencies=[Depends(admin_write)])
def revoke_host(request: Request, host_id: HostId) -> dict[str, object]:
    """Revoke every token of a host: it cannot report until it is allowed to enroll again."""
    count = service(request).identity.revoke_host(host_id)
    return {"revoked": count}


@router.post(
    "/api/v1/tokens", response_model=NewToken, tags=["admin"], dependencies=[Depends(admin_write)]
)
def create_token(request: Request, body: TokenRequest) -> NewToken:
    """Create an API token (admin, read, or read limited to a unit) or an enrollment secret."""
    token_id, token = service(request).identity.create_token(body.name, body.kind, body.unit)
    return NewToken(**dict(body), id=token_id, token=token)


@router.get(
    "/api/v1/tokens", response_model=list[TokenView], tags=["admin"], dependencies=[Depends(admin)]
)
def list_tokens(request: Request) -> list[TokenView]:
    """API tokens and enrollment secrets (never the tokens themselves), the collector's own
    from its settings first."""
    identity = service(request).identity
    from_settings = [
        TokenView(
            id=None,
            name=name,
            kind=kind,
            unit=None,
            created_at=None,
            revoked_at=None,
            last_used_at=None,
            source="environment",
        )
        for name, kind in identity.settings_tokens()
    ]
    return from_settings + [TokenView.model_validate(row) for row in identity.list_tokens()]


@router.delete("/api/v1/tokens/{token_id}", tags=["admin"], dependencies=[Depends(admin_write)])
def revoke_token(
    request: Request, token_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> dict[str, str]:
    """Revoke an API token or enrollment secret."""
    if not service(request).identity.revoke_token(token_id):
        raise NoSuchToken(f"no active token {token_id}")
    return {"detail": f"token {token_id} revoked"}


__all__ = ["router"]
