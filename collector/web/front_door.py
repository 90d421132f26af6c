"""The front door: every request but a report is authenticated from its headers, then its
body read within limits, before the web framework sees it.

FastAPI reads and parses a request's JSON body before it runs the route's dependencies, the
token check among them: left to itself it would read a 400 MB body from a caller with no
token before answering 401, and wait forever for a slow one. This plain ASGI middleware sits
in front of it. For each request it finds the route among the API's routes
(`web.routes.router`) and what that route requires of its caller, from the dependencies it
declares (`web.bearer.ACCESS`: nothing, a host token, an API token, an admin token); checks
the caller from the Authorization header, keeping it in the scope for those dependencies;
and only then reads the body: at most ``max_api_body_bytes``, as declared and as received,
within ``body_timeout``. The route then gets the body from memory. A refusal is answered here
as on every door (`web.answers`); when a body was on its way the connection is closed after
the answer, so nothing more of it is read.

Memory per request is bounded by ``max_api_body_bytes`` (and uvicorn's own read buffer, which
stops reading the socket at 64 KiB while nobody takes the body). Reports do not pass here:
`web.report_door` answers them in front of this door, with the same checks and its own limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import Match

from fleetwatch.collector.refusals import AdminRequired, ResponderRequired
from fleetwatch.collector.web.answers import ANSWERED, answer, as_refusal
from fleetwatch.collector.web.bearer import ACCESS, Access, calling_host_of, principal_of
from fleetwatch.collector.web.bodies import chunks_of, read_raw

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi.dependencies.models import Dependant
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from fleetwatch.collector.service import CollectorService


class FrontDoor:
    """ASGI middleware: authenticate, then read the body within limits, then ``app``."""

    def __init__(
        self, app: ASGIApp, service: CollectorService, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.service = service
        # (route, what it requires), worked out once: the middleware is built after every
        # route is declared
        self.routes = [
            (route, _required(route.dependant if isinstance(route, APIRoute) else None))
            for route in routes
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.service.settings
        headers = Headers(scope=scope)
        try:
            await self._authenticate(scope, self.access_of(scope))
            body = await read_raw(
                headers, chunks_of(receive), settings.max_api_body_bytes, settings.body_timeout
            )
        except ANSWERED as exc:
            refused = answer(as_refusal(exc))
            if _has_body(headers):
                # Whatever of the body is still coming stays unread: close rather than drain.
                refused.headers["Connection"] = "close"
            await refused(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def access_of(self, scope: Scope) -> Access:
        """What the route of this request requires of its caller: none if no route of the API
        fits (/healthz and the documents, declared on the application itself, or a path or
        method the framework will answer with 404 or 405)."""
        for route, access in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return access
        return Access.NONE

    async def _authenticate(self, scope: Scope, access: Access) -> None:
        identity = self.service.identity
        if access is Access.HOST:
            await calling_host_of(identity, scope)
        elif access >= Access.READER:
            principal = await principal_of(identity, scope)
            if access is Access.ADMIN and not principal.is_admin:
                raise AdminRequired
            if access is Access.RESPONDER and not principal.may_respond:
                raise ResponderRequired


def _required(dependant: Dependant | None) -> Access:
    """The strongest access any dependency of a route (at any depth) states."""
    if dependant is None:
        return Access.NONE
    own = ACCESS.get(dependant.call, Access.NONE) if dependant.call else Access.NONE
    return max([own, *(_required(d) for d in dependant.dependencies)])


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands over ``body`` at once, then whatever the server sends
    (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
