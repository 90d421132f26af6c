"""The collector's ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fleetwatch import __version__
from fleetwatch.collector.refusals import DatabaseUnavailable
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web import answers, apidocs, dashboard, metrics, metrics_files
from fleetwatch.collector.web.casework import router as casework_router
from fleetwatch.collector.web.feedback import router as feedback_router
from fleetwatch.collector.web.front_door import FrontDoor
from fleetwatch.collector.web.notifications import router as notifications_router
from fleetwatch.collector.web.openapi import openapi_document
from fleetwatch.collector.web.package_versions import router as package_versions_router
from fleetwatch.collector.web.protocol import guard_connections
from fleetwatch.collector.web.report_door import ReportDoor
from fleetwatch.collector.web.routes import router
from fleetwatch.collector.web.security_log import SecurityLog
from fleetwatch.collector.web.vulnerabilities import router as vulnerabilities_router
from fleetwatch.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


API_ROUTES = [
    *router.routes,
    *package_versions_router.routes,
    *vulnerabilities_router.routes,
    *metrics.router.routes,
    *dashboard.API_ROUTES,
    *casework_router.routes,
    *feedback_router.routes,
    *notifications_router.routes,
]
"""Every route of the API, from each router the application includes: the front door guards
them all (a router added below is added here too)."""


def create_app(settings: CollectorSettings | None = None, *, migrate: bool = True) -> FastAPI:
    """The collector application; its database is migrated when it starts, unless told not to."""
    svc = CollectorService(settings or CollectorSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(lambda: svc.start(migrate=migrate))
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)
            app.state.security_log.close()

    app = FastAPI(
        title="fleetwatch collector",
        version=__version__,
        lifespan=lifespan,
        # the documentation pages are web.apidocs', with assets of their own (no CDN)
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.add_middleware(FrontDoor, service=svc, routes=API_ROUTES)
    app.add_middleware(ReportDoor, service=svc)  # outermost: reports skip the front door
    app.state.service = svc
    app.include_router(router)
    app.include_router(package_versions_router)
    app.include_router(vulnerabilities_router)
    app.include_router(metrics.router)
    app.include_router(apidocs.router)
    metrics.install(app.state, svc)
    dashboard.install(app)
    app.include_router(casework_router)
    app.include_router(feedback_router)
    app.include_router(notifications_router)
    answers.install(
        app, SecurityLog(svc.settings.security_log_lines, svc.settings.security_log_interval)
    )

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Up, and the database answers."""
        try:
            svc.store.ping()
        except answers.DATABASE_ERRORS as exc:
            raise DatabaseUnavailable("database unavailable") from exc
        return JSONResponse(
            {
                "status": "ok",
                "policy": svc.policy.current.digest[:12],
                "policy_error": svc.policy.error,
            }
        )

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Ready for reports: the database answers, and writes to it succeed."""
        ready = svc.ingest_queue.readiness.check()
        if not ready.ready:
            since = ready.since.isoformat() if ready.since else None
            body = {"status": "not ready", "reason": ready.reason, "since": since}
            return JSONResponse(
                body, status_code=503, headers={"Retry-After": str(answers.RETRY_AFTER)}
            )
        return JSONResponse({"status": "ready"})

    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The application for each worker of `fleetwatch serve`: settings from the environment,
    migrations already applied by the parent process."""
    settings = CollectorSettings()
    configure_logging(settings.log_level, settings.log_format)
    guard_connections(settings)
    if settings.metrics_dir is not None:
        metrics_files.forget_dead_workers(settings.metrics_dir)
    return create_app(settings, migrate=False)
