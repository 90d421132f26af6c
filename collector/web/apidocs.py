"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every
asset served by the collector itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, and start Swagger UI with an inline
script: on a network without internet they stay blank. These pages load the copies shipped
in ``web/apidocs/`` (see the README there for versions and licences) from
``/docs/assets/<name>``, start Swagger UI from a script file of its own, and carry a
Content-Security-Policy that lets a browser load scripts, styles, images and connections from
the collector alone. (ReDoc's sidebar links to Redocly with a logo from their CDN: the policy
blocks that image, so the page asks nothing of the internet; the logo is simply not shown.)
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from fleetwatch.collector.refusals import NotFound

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
# Every file the pages may ask for, and its media type: nothing else of the folder is served.
ASSETS: Final[dict[str, str]] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
# ReDoc styles itself with inline styles (styled-components), Swagger UI with style
# attributes: both need 'unsafe-inline' for styles, never for scripts. ReDoc's search runs in
# a Worker it makes from a blob: URL.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
OPENAPI_URL = "/openapi.json"

_SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fleetwatch collector API</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{OPENAPI_URL}"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fleetwatch collector API</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<redoc spec-url="{OPENAPI_URL}"></redoc>
<script src="{ASSETS_PATH}/redoc.standalone.js"></script>
</body>
</html>
"""


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """The API in Swagger UI."""
    return HTMLResponse(_SWAGGER_PAGE, headers=PAGE_HEADERS)


@router.get("/redoc")
def redoc() -> HTMLResponse:
    """The API in ReDoc."""
    return HTMLResponse(_REDOC_PAGE, headers=PAGE_HEADERS)


@router.get(ASSETS_PATH + "/{name}")
def asset(name: str) -> Response:
    """One of the pages' files, by name (only those of `ASSETS`)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no such asset {name[:100]!r}")
    return Response(
        _content(name),
        media_type=media_type,
        headers={
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )


@functools.cache
def _content(name: str) -> bytes:
    return files("fleetwatch.collector.web").joinpath("apidocs", name).read_bytes()
