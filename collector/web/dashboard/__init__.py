"""The dashboard: server-rendered pages of the fleet, served by the collector itself.

`pages` has the routes (overview, hosts, a host, findings, sign-in), `actions` a finding's
page and its forms (acknowledge, waive), `browser` the session
cookie, CSRF and the security headers, `queries` turns a page's query string into filters
and reads, `charts` draws trends as SVG. Templates and static files (CSS, no script) ship in
the package: nothing is loaded from elsewhere, so the dashboard works air-gapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.staticfiles import StaticFiles

from fleetwatch.collector.web.dashboard import actions, sessions_api
from fleetwatch.collector.web.dashboard.pages import EXCEPTION_HANDLERS, router

# the API routes the front door checks the caller of (`web.front_door`)
API_ROUTES = sessions_api.router.routes

if TYPE_CHECKING:
    from fastapi import FastAPI

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages under /dashboard and its static files."""
    app.include_router(router)
    app.include_router(actions.router)
    app.include_router(sessions_api.router)
    for error, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
