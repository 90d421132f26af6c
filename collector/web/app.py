"""The collector's ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool

from fleetwatch import __version__
from fleetwatch.collector.auth.identity import AccessError
from fleetwatch.collector.ingest.writer import ReportRejectedError
from fleetwatch.collector.service import CollectorService, ReportInvalidError
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.bodies import LimitError
from fleetwatch.collector.web.openapi import openapi_document
from fleetwatch.collector.web.protocol import GuardedHttpToolsProtocol
from fleetwatch.collector.web.report_door import ReportFastPath
from fleetwatch.collector.web.routes import router
from fleetwatch.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DB_RETRY_AFTER = 5


def _error(status: int, detail: object, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LimitError)
    async def _limit(request: Request, exc: LimitError) -> JSONResponse:  # noqa: ARG001
        return _error(exc.status, exc.message, exc.retry_after)

    @app.exception_handler(AccessError)
    async def _access(request: Request, exc: AccessError) -> JSONResponse:  # noqa: ARG001
        return _error(exc.status, exc.message)

    @app.exception_handler(ReportRejectedError)
    async def _rejected(request: Request, exc: ReportRejectedError) -> JSONResponse:  # noqa: ARG001
        return _error(exc.status, exc.message)

    @app.exception_handler(ReportInvalidError)
    async def _invalid(request: Request, exc: ReportInvalidError) -> JSONResponse:  # noqa: ARG001
        return _error(exc.status, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()[:20]
        ]
        return _error(422, errors)

    async def _database(request: Request, exc: Exception) -> JSONResponse:  # noqa: ARG001
        return _error(503, "database unavailable; try again shortly", DB_RETRY_AFTER)

    for error in (OperationalError, DBAPIError, PoolTimeoutError):
        app.add_exception_handler(error, _database)


def create_app(settings: CollectorSettings | None = None, *, migrate: bool = True) -> FastAPI:
    """The collector application; its database is migrated when it starts, unless told not to."""
    svc = CollectorService(settings or CollectorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001
        await run_in_threadpool(lambda: svc.start(migrate=migrate))
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(title="fleetwatch collector", version=__version__, lifespan=lifespan)
    app.add_middleware(ReportFastPath, service=svc)
    app.state.service = svc
    app.include_router(router)
    _install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Up, and the database answers."""
        try:
            svc.store.ping()
        except (OperationalError, DBAPIError, PoolTimeoutError):
            return _error(503, "database unavailable", DB_RETRY_AFTER)
        return JSONResponse(
            {
                "status": "ok",
                "policy": svc.policy.current.digest[:12],
                "policy_error": svc.policy.error,
            }
        )

    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The application for each worker of `fleetwatch serve`: settings from the environment,
    migrations already applied by the parent process."""
    settings = CollectorSettings()
    configure_logging(settings.log_level, settings.log_format)
    GuardedHttpToolsProtocol.header_timeout = settings.header_timeout
    return create_app(settings, migrate=False)
