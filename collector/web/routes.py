"""The HTTP API under ``/api/v1``: agents enroll and report; admins and readers look.

Each route states the caller it needs as a dependency (`web.bearer`); the front door
(`web.front_door`) checks it from the headers, and bounds the body, before a route runs.
Agent bodies are read by hand (`read_body`) so that compression is under our control before
a byte is parsed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.ingest.parse import validation_detail
from fleetwatch.collector.refusals import (
    NoSuchHost,
    NoSuchToken,
    SchemaViolation,
)
from fleetwatch.collector.storage.hosts import INLINE_SECTIONS
from fleetwatch.collector.web.bearer import (
    CallingHost,
    Reader,
    admin,
    admin_write,
    fleet_reader,
)
from fleetwatch.collector.web.bodies import read_body
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


def _summaries(svc: CollectorService, principal: Principal) -> list[HostSummary]:
    now = datetime.now(UTC)
    policy = svc.policy.current
    with svc.store.read() as conn:
        hosts = {h.host_id: h for h in svc.store.hosts.all(conn)}
        counts = svc.store.findings.open_counts(conn)
    host_ids = sorted(set(hosts) | set(policy.hosts))
    summaries = [
        host_summary(host_id, hosts.get(host_id), counts.get(host_id, {}), policy, now)
        for host_id in host_ids
    ]
    return [s for s in summaries if principal.may_see(s.unit)]


@router.get("/api/v1/hosts", response_model=list[HostSummary], tags=["read"])
def list_hosts(
    request: Request,
    principal: Reader,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    status: Status | None = None,
) -> list[HostSummary]:
    """Every host the collector knows of, from the policy or by enrollment, with its status."""
    summaries = _summaries(service(request), principal)
    return [
        s
        for s in summaries
        if (unit is None or s.unit == unit) and (status is None or s.status == status)
    ]


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
    host_id: HostId,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Report id to page back from")
    ] = None,
) -> list[ReportView]:
    """Reports received from a host, newest first: sequence, collection and receive time.

    Reports that brought nothing new after one that did are not listed one by one: the entry
    of that report stands for them up to its `through` sequence.
    """
    svc = service(request)
    summary = next((s for s in _summaries(svc, principal) if s.host_id == host_id), None)
    if summary is None:
        raise NoSuchHost(f"no host {host_id!r}")
    with svc.store.read() as conn:
        rows = svc.store.reports.of_host(conn, host_id, limit, before)
    return [ReportView.model_validate(r) for r in rows]


@router.get("/api/v1/findings", response_model=list[FindingView], tags=["read"])
def list_findings(  # noqa: PLR0913, PLR0917  (one parameter per query filter)
    request: Request,
    principal: Reader,
    host_id: HostId | None = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    is_open: Annotated[bool | None, Query(alias="open")] = None,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    state: Literal["open", "acknowledged", "resolved", "verified"] | None = None,
    waived: bool | None = None,
    overdue: bool = False,
) -> list[FindingView]:
    """Findings, open and resolved, filtered by host, rule, state, unit, waived or not, and
    overdue (open, not waived, past the due date)."""
    svc = service(request)
    now = datetime.now(UTC)
    host_ids = None
    if unit is not None or principal.unit is not None or host_id is not None:
        visible = [
            s.host_id
            for s in _summaries(svc, principal)
            if (unit is None or s.unit == unit) and (host_id is None or s.host_id == host_id)
        ]
        host_ids = visible
    with svc.store.read() as conn:
        rows = svc.store.findings.query(
            conn,
            host_ids=host_ids,
            rule=rule,
            is_open=is_open,
            state=state,
            waived=waived,
            overdue_at=now if overdue else None,
            limit=limit,
            offset=offset,
        )
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
