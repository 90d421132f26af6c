"""The API of the response to findings: units, a finding's case and history, acknowledging
and due dates, waivers, and the audit log (read only: nothing in the API edits it).

Who may do what: every reader sees units, findings, histories and waivers of the units it may
see; an admin or a respond token of the finding's unit acknowledges and sets due dates; only
admins make and revoke waivers (exceptions are granted by the office) and read the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.refusals import InvalidCursor, NoSuchUnit, NoSuchWaiver
from fleetwatch.collector.web import paging
from fleetwatch.collector.web.bearer import Reader, Responder, admin, admin_write
from fleetwatch.collector.web.casework_views import (
    AcknowledgeRequest,
    DueRequest,
    EventView,
    RevokeRequest,
    UnitView,
    WaiverRequest,
    WaiverView,
    utc,
)
from fleetwatch.collector.web.paging import DEFAULT_LIMIT, CursorParam, Limit, Offset
from fleetwatch.collector.web.views import FindingView

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Principal
    from fleetwatch.collector.service import CollectorService
    from fleetwatch.collector.storage.waivers import WaiverRow

router = APIRouter()
MAX_ID = 2**62
FindingId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


# -- units --------------------------------------------------------------------------------


def _units(svc: CollectorService, principal: Principal) -> list[UnitView]:
    now = datetime.now(UTC)
    policy = svc.policy.current
    # one pass over narrow rows: each host's unit, and each host's open findings counted in
    # SQL, summed per unit here (not every finding read, nor every unit walking them all)
    with svc.store.read() as conn:
        enrolled = svc.store.hosts.units(conn)
        tally = svc.store.findings.open_tally(conn, now)
    unit_of = {
        h: policy.for_host(h).unit or enrolled.get(h) for h in set(enrolled) | set(policy.hosts)
    }
    names = set(policy.units) | {u for u in unit_of.values() if u is not None}
    members: dict[str, list[str]] = {}
    sums: dict[str, list[int]] = {}
    for host_id, unit_name in unit_of.items():
        if unit_name is None:
            continue
        members.setdefault(unit_name, []).append(host_id)
        counted = tally.get(host_id)
        if counted:
            total = sums.setdefault(unit_name, [0, 0, 0])
            for i, n in enumerate(counted):
                total[i] += n
    views = []
    for name in sorted(names):
        if not principal.may_see(name):
            continue
        unit = policy.units.get(name)
        open_findings, overdue_findings, waived_findings = sums.get(name, [0, 0, 0])
        views.append(
            UnitView(
                name=name,
                title=unit.title if unit else name,
                emails=list(unit.emails) if unit else [],
                targets=list(unit.targets) if unit else [],
                digest=unit.digest if unit else "immediate",
                declared=name in policy.declared_units,
                hosts=sorted(members.get(name, [])),
                open_findings=open_findings,
                overdue_findings=overdue_findings,
                waived_findings=waived_findings,
            )
        )
    return views


@router.get("/api/v1/units", response_model=list[UnitView], tags=["response"])
def list_units(request: Request, principal: Reader) -> list[UnitView]:
    """Units: their contacts, the hosts they answer for, and their open, overdue and waived
    findings."""
    return _units(_service(request), principal)


@router.get("/api/v1/units/{name}", response_model=UnitView, tags=["response"])
def get_unit(
    request: Request, name: Annotated[str, Path(max_length=255)], principal: Reader
) -> UnitView:
    """One unit."""
    for unit in _units(_service(request), principal):
        if unit.name == name:
            return unit
    raise NoSuchUnit(f"no unit {name!r}")


# -- a finding's case ---------------------------------------------------------------------


@router.get("/api/v1/findings/{finding_id}", response_model=FindingView, tags=["response"])
def get_finding(request: Request, finding_id: FindingId, principal: Reader) -> FindingView:
    """One finding, with its state, due date and waiver."""
    svc = _service(request)
    with svc.store.read() as conn:
        row = svc.casework.finding(conn, finding_id, principal.unit)
    return FindingView.of(row, datetime.now(UTC))


@router.get(
    "/api/v1/findings/{finding_id}/history", response_model=list[EventView], tags=["response"]
)
def finding_history(request: Request, finding_id: FindingId, principal: Reader) -> list[EventView]:
    """Every event of a finding's case, oldest first: who did what, and when."""
    svc = _service(request)
    with svc.store.read() as conn:
        svc.casework.finding(conn, finding_id, principal.unit)
        events = svc.store.events.for_finding(conn, finding_id)
    return [EventView.model_validate(e) for e in events]


@router.post(
    "/api/v1/findings/{finding_id}/acknowledge", response_model=FindingView, tags=["response"]
)
async def acknowledge(
    request: Request, finding_id: FindingId, body: AcknowledgeRequest, principal: Responder
) -> FindingView:
    """Acknowledge an open finding, with a note and perhaps a due date (admin, or a respond
    token of its unit)."""
    row = await run_in_threadpool(
        _service(request).casework.acknowledge,
        finding_id,
        principal.name,
        body.note,
        body.due_at,
        unit=principal.unit,
    )
    return FindingView.of(row, datetime.now(UTC))


@router.post("/api/v1/findings/{finding_id}/due", response_model=FindingView, tags=["response"])
async def set_due(
    request: Request, finding_id: FindingId, body: DueRequest, principal: Responder
) -> FindingView:
    """Set (or clear, with null) an open finding's due date (admin, or a respond token of its
    unit)."""
    row = await run_in_threadpool(
        _service(request).casework.set_due,
        finding_id,
        principal.name,
        body.due_at,
        body.note,
        unit=principal.unit,
    )
    return FindingView.of(row, datetime.now(UTC))


# -- waivers ------------------------------------------------------------------------------


def _waiver_view(row: WaiverRow, now: datetime) -> WaiverView:
    return WaiverView.model_validate(row).model_copy(update={"in_force": row.is_in_force(now)})


@router.get("/api/v1/waivers", response_model=list[WaiverView], tags=["response"])
def list_waivers(
    request: Request,
    response: Response,
    principal: Reader,
    include_ended: Annotated[bool, Query(alias="all")] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
    offset: Offset = None,
) -> list[WaiverView]:
    """Waivers in force (with all=true, revoked and expired ones too), newest first: one
    page; the next page's cursor in ``X-Next-Cursor`` and ``Link``. A token limited to a unit
    sees the waivers of its unit and of its hosts."""
    paging.no_offset(offset)
    svc = _service(request)
    now = datetime.now(UTC)
    filters = {"all": include_ended, "scope": principal.unit}
    before = None
    if cursor is not None:
        (before,) = paging.decode(cursor, "waivers", filters, 1)
        if not isinstance(before, int):
            raise InvalidCursor("cursor does not hold a position in this list")
    with svc.store.read() as conn:
        rows, last = svc.store.waivers.page(
            conn,
            now=now,
            include_ended=include_ended,
            unit=principal.unit,
            before=before,
            limit=limit,
        )
    if last is not None:
        paging.next_page(request, response, paging.encode("waivers", filters, [last]))
    return [_waiver_view(r, now) for r in rows]


@router.post(
    "/api/v1/waivers",
    response_model=WaiverView,
    tags=["response"],
    dependencies=[Depends(admin_write)],
)
async def create_waiver(request: Request, body: WaiverRequest, principal: Reader) -> WaiverView:
    """Excuse findings of a rule whose subject matches a pattern, on a host, a unit's hosts or
    a group's, until a date (admin)."""
    now = datetime.now(UTC)
    new = body.waiver(principal.name, now)
    row, _ = await run_in_threadpool(_service(request).casework.create_waiver, new)
    return _waiver_view(row, now)


@router.post(
    "/api/v1/waivers/{waiver_id}/revoke",
    response_model=WaiverView,
    tags=["response"],
    dependencies=[Depends(admin_write)],
)
async def revoke_waiver(
    request: Request,
    waiver_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    principal: Reader,
    body: RevokeRequest | None = None,
) -> WaiverView:
    """End a waiver now (admin); the findings it covered count again."""
    now = datetime.now(UTC)
    reason = body.reason if body else None
    row, _ = await run_in_threadpool(
        _service(request).casework.revoke_waiver, waiver_id, principal.name, reason, now
    )
    return _waiver_view(row, now)


@router.get("/api/v1/waivers/{waiver_id}", response_model=WaiverView, tags=["response"])
def get_waiver(
    request: Request, waiver_id: Annotated[int, Path(ge=1, le=MAX_ID)], principal: Reader
) -> WaiverView:
    """One waiver."""
    svc = _service(request)
    with svc.store.read() as conn:
        row = svc.store.waivers.get(conn, waiver_id)
        unit = None if row is None else svc.casework.waiver_unit(conn, row)
    if row is None or (principal.unit is not None and unit != principal.unit):
        raise NoSuchWaiver(f"no waiver {waiver_id}")
    return _waiver_view(row, datetime.now(UTC))


# -- the audit log ------------------------------------------------------------------------


@router.get(
    "/api/v1/audit",
    response_model=list[EventView],
    tags=["response"],
    dependencies=[Depends(admin)],
)
def audit(  # noqa: PLR0913, PLR0917  (one parameter per filter)
    request: Request,
    response: Response,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    unit: Annotated[str | None, Query(max_length=255)] = None,
    host_id: Annotated[str | None, Query(max_length=253)] = None,
    finding_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Event id to start after")] = 0,
    limit: Limit = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> list[EventView]:
    """The audit log, oldest first, filtered: one page; the next page's cursor in
    ``X-Next-Cursor`` and ``Link`` (``after``, an event id, starts after it, as the cursor
    does) (admin). Nothing in the API changes it."""
    svc = _service(request)
    since, until = utc(since), utc(until)
    filters = {
        "kind": kind,
        "unit": unit,
        "host_id": host_id,
        "finding_id": finding_id,
        "actor": actor,
        "since": since,
        "until": until,
    }
    if cursor is not None:
        (after,) = paging.decode(cursor, "audit", filters, 1)
        if not isinstance(after, int):
            raise InvalidCursor("cursor does not hold a position in this list")
    with svc.store.read() as conn:
        rows = svc.store.events.query(
            conn,
            kind=kind,
            unit=unit,
            host_id=host_id,
            finding_id=finding_id,
            actor=actor,
            since=since,
            until=until,
            after=after,
            limit=limit + 1,
        )
    if len(rows) > limit:
        rows = rows[:limit]
        paging.next_page(request, response, paging.encode("audit", filters, [rows[-1].id]))
    return [EventView.model_validate(r) for r in rows]


__all__ = ["router"]
