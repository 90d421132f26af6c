"""The collector's ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool

from agent import __version__
from agent.schema import EnrollRequest, Report
from collector.api import router
from collector.identity import AccessError
from collector.ingest import ReportRejectedError
from collector.limits import LimitError
from collector.service import CollectorService, ReportInvalidError
from collector.settings import CollectorSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pydantic import BaseModel

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


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the agent bodies we read by hand described too."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies: dict[str, type[BaseModel]] = {"Report": Report, "EnrollRequest": EnrollRequest}
    for name, model in bodies.items():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[name] = model_schema
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            body = operation.pop("x-fleetwatch-body", None)
            if body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}
                    },
                }
    app.openapi_schema = schema
    return schema


def create_app(settings: CollectorSettings | None = None) -> FastAPI:
    """The collector application; its database is migrated when it starts."""
    svc = CollectorService(settings or CollectorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001
        await run_in_threadpool(svc.start)
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(title="fleetwatch collector", version=__version__, lifespan=lifespan)
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

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
