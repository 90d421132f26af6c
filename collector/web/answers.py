"""Refusals as HTTP answers: the one place a refusal becomes a status code, for both doors.

The domain raises `fleetwatch.collector.refusals`; the database layer raises SQLAlchemy's
errors. Here each kind of refusal gets its status, every answer the body ``{"detail": ...}``,
a 401 the ``WWW-Authenticate: Bearer`` challenge, and a refusal that may pass (too many
requests, collector unavailable) a ``Retry-After``. The FastAPI application answers through
the handlers `install` registers; the report door (`web.report_door`) through `answer` itself,
so both give the same bytes for the same refusal.

Sending an answer writes the refusal to the security log (`web.security_log`) with what the
request's ASGI scope says of the client: whatever door refused, it is logged and counted
here, once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from fleetwatch.collector import instruments
from fleetwatch.collector.ingest.parse import MAX_ERRORS_SHOWN
from fleetwatch.collector.refusals import (
    BadRequest,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidBody,
    InvalidRequest,
    NotFound,
    Refusal,
    TooLarge,
    TooManyRequests,
    TooSlow,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedEncoding,
)
from fleetwatch.collector.web.security_log import SecurityLog

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.types import Receive, Scope, Send

# Seconds a caller is told to wait when the collector cannot serve anyone (the database does
# not answer, the ingest queue is full), unless the refusal says otherwise.
RETRY_AFTER = 5

# Errors of the database layer that mean "not now" rather than "never" (a lost or refused
# connection, a statement that failed, no free connection in the pool): the caller should
# retry, and nothing about the request is wrong. OperationalError is a DBAPIError.
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeoutError)

# Everything the doors answer with a refusal rather than a server error.
ANSWERED: tuple[type[Exception], ...] = (Refusal, *DATABASE_ERRORS)

STATUS: dict[type[Refusal], int] = {
    InvalidBody: 400,
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TooSlow: 408,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedEncoding: 415,
    Unprocessable: 422,
    TooManyRequests: 429,
    Unavailable: 503,
}


def status_of(refusal: Refusal) -> int:
    """The HTTP status for a refusal: that of the nearest kind it belongs to."""
    for kind in type(refusal).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400  # a refusal of no known kind is still the client's request refused


def as_refusal(exc: Exception) -> Refusal:
    """The refusal an exception of `ANSWERED` stands for."""
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, DATABASE_ERRORS):
        instruments.DATABASE_ERRORS.labels("request").inc()
        return DatabaseUnavailable()
    raise TypeError(f"not a refusal: {type(exc).__name__}") from exc


class RefusalAnswer(JSONResponse):
    """The answer to a refusal: sending it writes the refusal to the security log."""

    def __init__(self, refusal: Refusal, headers: dict[str, str]) -> None:
        super().__init__(
            {"detail": refusal.detail}, status_code=status_of(refusal), headers=headers
        )
        # Kept without its traceback: the traceback's frames hold this answer (a reference
        # cycle only the cyclic collector frees, which runs rarely here: see gc_tuning), and
        # with it each refused request's scope and read buffers. Measured: a flood of refused
        # bodies took each worker from 83 to 160 MiB.
        refusal.__traceback__ = None
        refusal.__context__ = refusal.__cause__ = None
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        raw_path: bytes | None = scope.get("raw_path")
        security_log_of(scope).refused(
            self.refusal,
            self.status_code,
            client=client[0] if client else None,
            method=scope.get("method"),
            # as sent, still escaped: a decoded path could hold line breaks
            path=raw_path.decode("latin-1") if raw_path is not None else scope.get("path"),
        )
        await super().__call__(scope, receive, send)


def answer(refusal: Refusal) -> RefusalAnswer:
    """The HTTP answer to a refusal (an ASGI application that sends itself, and logs it)."""
    headers: dict[str, str] = {}
    if isinstance(refusal, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = refusal.retry_after
    if retry_after is None and isinstance(refusal, Unavailable):
        retry_after = RETRY_AFTER
    if retry_after is not None:
        # rounded up: never sooner than the refusal said, and never "0"
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return RefusalAnswer(refusal, headers)


# The security log of answers sent outside an application `install` prepared (the collector
# sends none; a test or a tool might): they are still logged, with the default limits.
_UNATTACHED = SecurityLog()


def security_log_of(scope: Scope) -> SecurityLog:
    """The security log of the application a request came to."""
    app = scope.get("app")
    found = getattr(getattr(app, "state", None), "security_log", None)
    return found if isinstance(found, SecurityLog) else _UNATTACHED


def install(app: FastAPI, security_log: SecurityLog | None = None) -> None:
    """Answer refusals, database errors and FastAPI's own validation errors in ``app``, and
    write every refusal to ``security_log`` (``app.state.security_log``)."""
    app.state.security_log = security_log or SecurityLog()
    for error in ANSWERED:
        app.add_exception_handler(error, _refused)
    app.exception_handler(RequestValidationError)(_invalid_request)


async def _refused(request: Request, exc: Exception) -> RefusalAnswer:  # noqa: ARG001
    return answer(as_refusal(exc))


async def _invalid_request(request: Request, exc: RequestValidationError) -> RefusalAnswer:  # noqa: ARG001
    """Parameters or a JSON body FastAPI refused: the errors, without the input (which may be
    huge or hostile)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()[:MAX_ERRORS_SHOWN]
    ]
    return answer(InvalidRequest(errors))
