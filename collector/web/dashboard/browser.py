"""The browser's side of a dashboard session: its cookie, its forms, its headers.

The cookie holds only a random session id (`auth.sessions`): HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), Secure when the collector speaks TLS, and
scoped to /dashboard. Every form that changes something carries the session's CSRF token,
checked before anything is done; the sign-in form, before any session exists, carries a
token matched against a short-lived cookie of its own (double submit). Every page is sent with
a Content-Security-Policy that allows only the collector's own style sheet and images: no
script at all, inline or not, and no inline style.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.auth.sessions import Session
from fleetwatch.collector.auth.tokens import same_secret
from fleetwatch.collector.refusals import FormTokenRejected

if TYPE_CHECKING:
    from starlette.responses import Response

    from fleetwatch.collector.auth.sessions import SessionKeeper

SESSION_COOKIE = "fleetwatch_session"
SIGN_IN_COOKIE = "fleetwatch_sign_in"
COOKIE_PATH = "/dashboard"
SIGN_IN_SECONDS = 600

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):  # noqa: N818  (a redirect, not an error)
    """No live session: the page answers with a redirect to the sign-in page."""


def _keeper(request: Request) -> SessionKeeper:
    return request.app.state.service.sessions  # type: ignore[no-any-return]


async def signed_in(request: Request) -> Session:
    """Dependency: the request's live session, or a redirect to the sign-in page."""
    found = await run_in_threadpool(_keeper(request).find, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise SignInRequired
    return found


SignedIn = Annotated[Session, Depends(signed_in)]


def secure(request: Request) -> bool:
    """Whether cookies get the Secure flag: when the browser came over TLS."""
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        secure=secure(request),
        samesite="strict",
        path=COOKIE_PATH,
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, secure=secure(request), samesite="strict", path=COOKIE_PATH
    )


def sign_in_token() -> str:
    """A token for the sign-in form, to be set as its cookie too (double submit)."""
    return secrets.token_urlsafe(24)


def set_sign_in_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=SIGN_IN_SECONDS,
        httponly=True,
        secure=secure(request),
        samesite="strict",
        path=COOKIE_PATH,
    )


def check_sign_in_token(request: Request, sent: str | None) -> None:
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not sent or not expected or not same_secret(sent, expected):
        raise FormTokenRejected


async def form_of(request: Request) -> dict[str, str]:
    """A form's fields (application/x-www-form-urlencoded; the first value of each). The body
    was read by the front door within ``max_api_body_bytes``; parsed with the standard
    library, which is all an urlencoded form needs."""
    body = (await request.body()).decode("utf-8", "replace")
    return {name: values[0] for name, values in parse_qs(body, max_num_fields=50).items()}
