"""The dashboard's routes: sign-in and out, overview, hosts, a host, findings, sessions.

Each page needs a live session (`browser.signed_in`; without one, a redirect to the sign-in
page) and reads through `queries`, which limits every read to the reader's unit. Forms that
change something are POSTs carrying the session's CSRF token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from fleetwatch import __version__
from fleetwatch.collector.refusals import UnknownToken
from fleetwatch.collector.storage.fleet_view import (
    FINDING_STATES,
    SEVERITIES,
    STATUSES,
    FindingFilter,
    HostFilter,
)
from fleetwatch.collector.web.dashboard import queries
from fleetwatch.collector.web.dashboard.browser import (
    HEADERS,
    SESSION_COOKIE,
    SignedIn,
    SignInRequired,
    check_sign_in_token,
    clear_session_cookie,
    form_of,
    set_session_cookie,
    set_sign_in_cookie,
    sign_in_token,
)
from fleetwatch.schema import HostId  # noqa: TC001  (FastAPI reads it when the app starts)

if TYPE_CHECKING:
    from fleetwatch.collector.auth.sessions import Session
    from fleetwatch.collector.service import CollectorService

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["version"] = __version__
templates.env.globals["severities"] = SEVERITIES
templates.env.globals["statuses"] = STATUSES
templates.env.globals["finding_states"] = FINDING_STATES

Text = Annotated[str | None, Query(max_length=255)]
MAX_ID = 2**62


def _service(request: Request) -> CollectorService:
    return request.app.state.service  # type: ignore[no-any-return]


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page rendered from its template (autoescaped), with the security headers."""
    return templates.TemplateResponse(
        request,
        name,
        {"session": session, **context},
        status_code=status_code,
        headers=HEADERS,
    )


def sign_in_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303, headers=HEADERS)


def _blank(value: str | None) -> str | None:
    """A filter left empty in a form means no filter."""
    return value.strip() if value and value.strip() else None


# -- signing in ---------------------------------------------------------------------------


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=303)


@router.get("/dashboard/login")
def login_form(request: Request, error: Text = None) -> HTMLResponse:
    token = sign_in_token()
    response = page(request, "login.html", {"error": error, "form_token": token})
    set_sign_in_cookie(response, request, token)
    return response


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    check_sign_in_token(request, form.get("form_token"))
    try:
        session_id = await run_in_threadpool(
            _service(request).sessions.sign_in, form.get("token", "")
        )
    except UnknownToken:
        return RedirectResponse(
            "/dashboard/login?error=That+token+was+not+accepted", status_code=303, headers=HEADERS
        )
    response = RedirectResponse("/dashboard/", status_code=303, headers=HEADERS)
    set_session_cookie(response, request, session_id)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request, session: SignedIn) -> Response:
    form = await form_of(request)
    session.check_form(form.get("csrf_token"))
    await run_in_threadpool(
        _service(request).sessions.sign_out, request.cookies.get(SESSION_COOKIE, "")
    )
    response = sign_in_redirect()
    clear_session_cookie(response, request)
    return response


# -- pages --------------------------------------------------------------------------------


@router.get("/dashboard/")
def overview_page(
    request: Request,
    session: SignedIn,
    unit: Text = None,
    sort: Annotated[str, Query(pattern="^(" + "|".join(queries.UNIT_SORTS) + ")$")] = "unit",
    desc: bool = False,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
) -> HTMLResponse:
    svc = _service(request)
    days = days if days in queries.TREND_DAYS else queries.TREND_DAYS[0]
    data = queries.overview(
        svc, session.principal, unit=_blank(unit), sort=sort, desc=desc, days=days
    )
    return page(
        request,
        "overview.html",
        {
            "o": data,
            "sort": sort,
            "desc": desc,
            "unit": _blank(unit),
            "units": queries.units_of(svc, session.principal),
            "trend_days": queries.TREND_DAYS,
        },
        session=session,
    )


@router.get("/dashboard/hosts")
def hosts_page(  # noqa: PLR0913  (one parameter per control of the page)
    request: Request,
    session: SignedIn,
    *,
    unit: Text = None,
    group: Text = None,
    status: Text = None,
    q: Text = None,
    sort: Literal["host", "unit", "status", "last_report"] = "host",
    desc: bool = False,
    after: Annotated[str | None, Query(max_length=600)] = None,
) -> HTMLResponse:
    svc = _service(request)
    wanted = HostFilter(
        unit=_blank(unit),
        group=_blank(group),
        status=_blank(status) if _blank(status) in STATUSES else None,
        text=_blank(q),
    )
    position = None
    if after and "\x1f" in after:
        value, _, host_id = after.partition("\x1f")
        position = (value, host_id)
    try:
        result = queries.host_page(
            svc, session.principal, wanted, sort=sort, desc=desc, after=position
        )
    except ValueError:  # an `after` that is not a moment, for a page sorted by time
        return page(
            request,
            "error.html",
            {"message": "That page link is not valid."},
            session=session,
            status_code=400,
        )
    next_after = "\x1f".join(result.next_after) if result.next_after else None
    return page(
        request,
        "hosts.html",
        {
            "page": result,
            "wanted": wanted,
            "sort": sort,
            "desc": desc,
            "next_after": next_after,
            "units": queries.units_of(svc, session.principal),
            "groups": sorted(svc.policy.current.groups),
        },
        session=session,
    )


@router.get("/dashboard/hosts/{host_id}")
def host_page(request: Request, session: SignedIn, host_id: HostId) -> HTMLResponse:
    view = queries.host_view(_service(request), session.principal, host_id)
    if view is None:
        return page(
            request,
            "error.html",
            {"message": f"No host {host_id} that you may see."},
            session=session,
            status_code=404,
        )
    return page(request, "host.html", {"h": view}, session=session)


@router.get("/dashboard/findings")
def findings_page(  # noqa: PLR0913  (one parameter per control of the page)
    request: Request,
    session: SignedIn,
    *,
    unit: Text = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    severity: Text = None,
    state: Literal["open", "acknowledged", "waived", "overdue", "resolved", "all"] = "open",
    older_than_days: Annotated[str | None, Query(max_length=5, pattern=r"^\d*$")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> HTMLResponse:
    svc = _service(request)
    wanted = FindingFilter(
        unit=_blank(unit),
        rule=_blank(rule),
        severity=_blank(severity) if _blank(severity) in SEVERITIES else None,
        state=state,
        older_than_days=int(older_than_days) if older_than_days else None,  # "" from the form
    )
    lines, next_before = queries.finding_page(svc, session.principal, wanted, before)
    return page(
        request,
        "findings.html",
        {
            "lines": lines,
            "wanted": wanted,
            "next_before": next_before,
            "units": queries.units_of(svc, session.principal),
        },
        session=session,
    )


@router.get("/dashboard/sessions")
def sessions_page(request: Request, session: SignedIn) -> HTMLResponse:
    if not session.principal.is_admin:
        return page(
            request,
            "error.html",
            {"message": "Only an admin may see the sessions."},
            session=session,
            status_code=403,
        )
    rows = _service(request).sessions.list()
    return page(request, "sessions.html", {"rows": rows}, session=session)


@router.post("/dashboard/sessions/{session_id}/revoke")
async def revoke_session(
    request: Request, session: SignedIn, session_id: Annotated[int, PathParam(ge=1, le=MAX_ID)]
) -> Response:
    form = await form_of(request)
    session.check_form(form.get("csrf_token"))
    if not session.principal.is_admin:
        return page(
            request,
            "error.html",
            {"message": "Only an admin may end sessions."},
            session=session,
            status_code=403,
        )
    await run_in_threadpool(_service(request).sessions.revoke, session_id)
    return RedirectResponse("/dashboard/sessions", status_code=303, headers=HEADERS)


async def _sign_in_required(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    return sign_in_redirect()


EXCEPTION_HANDLERS = {SignInRequired: _sign_in_required}
