"""A finding's page and the forms that act on it: acknowledge, waive.

The forms call what the API's routes call (`compliance.casework.Casework`), as the signed-in
reader: acknowledging needs an admin or a respond token of the finding's unit, waiving an
admin. Each POST carries the session's CSRF token and counts against the caller's rate of
writes, as an API write does. A refusal (a closed finding, a waiver without expiry, no right
to act) is shown on the finding's page as a message, never as a bare error.
"""

from __future__ import annotations

import glob
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.refusals import Refusal
from fleetwatch.collector.web.casework_views import AcknowledgeRequest, WaiverRequest
from fleetwatch.collector.web.dashboard import queries
from fleetwatch.collector.web.dashboard.browser import HEADERS, SignedIn, form_of
from fleetwatch.collector.web.dashboard.pages import MAX_ID, page

if TYPE_CHECKING:
    from fleetwatch.collector.auth.sessions import Session
    from fleetwatch.collector.service import CollectorService

router = APIRouter(include_in_schema=False)
FindingId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Message = Annotated[str | None, Query(max_length=300)]


def _service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


def _back(finding_id: int, *, done: str | None = None, error: str | None = None) -> Response:
    """Back to the finding's page (POST, redirect, GET), with what happened."""
    query = f"?done={quote(done)}" if done else f"?error={quote(error or '')}" if error else ""
    return RedirectResponse(
        f"/dashboard/findings/{finding_id}{query}", status_code=303, headers=HEADERS
    )


def _end_of(day: str) -> datetime | None:
    """A date from a form's date field as the end of that day, UTC (None when empty)."""
    if not day.strip():
        return None
    return datetime.combine(date.fromisoformat(day.strip()), time(0), UTC) + timedelta(days=1)


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "form"
    return f"{field}: {first['msg']}"


@router.get("/dashboard/findings/{finding_id}")
def finding_page(
    request: Request,
    session: SignedIn,
    finding_id: FindingId,
    done: Message = None,
    error: Message = None,
) -> HTMLResponse:
    view = queries.finding_view(_service(request), session.principal, finding_id)
    if view is None:
        return page(
            request,
            "error.html",
            {"message": f"No finding {finding_id} that you may see."},
            session=session,
            status_code=404,
        )
    return page(
        request,
        "finding.html",
        {"f": view.line, "events": view.events, "done": done, "error": error, "now": view.now},
        session=session,
    )


def _may_act(request: Request, session: Session, form: dict[str, str]) -> None:
    """The CSRF token first, then the caller's rate of writes (as the API counts them)."""
    session.check_form(form.get("csrf_token"))
    _service(request).identity.count_admin_write(session.principal)


@router.post("/dashboard/findings/{finding_id}/acknowledge")
async def acknowledge(request: Request, session: SignedIn, finding_id: FindingId) -> Response:
    form = await form_of(request)
    principal = session.principal
    _may_act(request, session, form)
    if not principal.may_respond:
        return _back(finding_id, error="Acknowledging needs an admin or a respond token.")
    try:
        body = AcknowledgeRequest(
            note=form.get("note", "").strip() or None, due_at=_end_of(form.get("due", ""))
        )
    except ValueError as exc:  # a date that is not one, or a note too long
        message = _invalid(exc) if isinstance(exc, ValidationError) else f"due: {exc}"
        return _back(finding_id, error=message)
    try:
        await run_in_threadpool(
            _service(request).casework.acknowledge,
            finding_id,
            principal.name,
            body.note,
            body.due_at,
            unit=principal.unit,
        )
    except Refusal as refusal:
        return _back(finding_id, error=str(refusal))
    return _back(finding_id, done="Acknowledged.")


@router.post("/dashboard/findings/{finding_id}/waive")
async def waive(request: Request, session: SignedIn, finding_id: FindingId) -> Response:
    form = await form_of(request)
    principal = session.principal
    _may_act(request, session, form)
    if not principal.is_admin:
        return _back(finding_id, error="Only an admin may waive a finding.")
    view = queries.finding_view(_service(request), principal, finding_id)
    if view is None:
        return _back(finding_id, error=f"No finding {finding_id}.")
    try:
        expires_at = _end_of(form.get("expires", ""))
        body = WaiverRequest.model_validate(
            {
                "scope": "host",
                "target": view.line.host_id,
                "rule": view.line.rule,
                "subject": glob.escape(view.line.key),  # this finding's subject, literally
                "reason": form.get("reason", "").strip(),
                "owner": form.get("owner", "").strip(),
                "expires_at": expires_at,
            }
        )
    except ValidationError as exc:
        return _back(finding_id, error=_invalid(exc))
    except ValueError as exc:
        return _back(finding_id, error=f"expires: {exc}")
    now = datetime.now(UTC)
    new = body.waiver(principal.name, now)
    try:
        waiver, _ = await run_in_threadpool(_service(request).casework.create_waiver, new)
    except Refusal as refusal:
        return _back(finding_id, error=str(refusal))
    return _back(finding_id, done=f"Waived by waiver {waiver.id}.")
