"""Who is calling: the bearer token of a request, and what each route requires of it.

Every caller authenticates with ``Authorization: Bearer <token>``: a host with its host token,
people and scripts with an API token. The header is parsed here and nowhere else, once per
request: the front door (`web.front_door`) resolves the caller before a byte of the body is
read and keeps it in the request's ASGI scope, where the route dependencies find it. Routes
state what they need as a dependency (`Reader`, `fleet_reader`, `admin`, `admin_write`,
`CallingHost`); the front door reads those statements (`ACCESS`) to know what to check first.
The report door, outside FastAPI, asks `host_of`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.auth.identity import Principal
from fleetwatch.collector.refusals import (
    AdminRequired,
    FleetReaderRequired,
    MissingToken,
    ResponderRequired,
    UnknownToken,
)

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from fleetwatch.collector.auth.identity import Identity

# Where a request's resolved caller is kept in its ASGI scope.
PRINCIPAL_KEY = "fleetwatch.principal"
HOST_KEY = "fleetwatch.host"


@dataclass(frozen=True)
class Host:
    """A host calling with its host token."""

    host_id: str
    token: str


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; refuse anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken
    return token


def _authorization(scope: MutableMapping[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def host_of(identity: Identity, authorization: str | None) -> str:
    """The host a request's host token belongs to (from the cache when it can be)."""
    token = bearer_token(authorization)
    if identity.revocations_due():  # at most every token_revocation_check_seconds
        await run_in_threadpool(identity.follow_revocations)
    host_id = identity.cached_host(token)
    if host_id is None:
        host_id = await run_in_threadpool(identity.host_for, token)
    if host_id is None:
        raise UnknownToken("host token not accepted (unknown or revoked)")
    return host_id


async def principal_of(identity: Identity, scope: MutableMapping[str, Any]) -> Principal:
    """The API caller of a request, resolved once and kept in its scope."""
    principal = scope.get(PRINCIPAL_KEY)
    if principal is None:
        token = bearer_token(_authorization(scope))
        principal = await run_in_threadpool(identity.principal_for, token)
        if principal is None:
            raise UnknownToken("API token not accepted")
        scope[PRINCIPAL_KEY] = principal
    return principal  # type: ignore[no-any-return]


async def calling_host_of(identity: Identity, scope: MutableMapping[str, Any]) -> Host:
    """The host calling with its host token, resolved once and kept in the scope."""
    host = scope.get(HOST_KEY)
    if host is None:
        authorization = _authorization(scope)
        host = Host(await host_of(identity, authorization), bearer_token(authorization))
        scope[HOST_KEY] = host
    return host


def _identity(request: Request) -> Identity:
    return request.app.state.service.identity  # type: ignore[no-any-return]


# -- what routes require ------------------------------------------------------------------


async def reader(request: Request) -> Principal:
    """Dependency: an API caller with a read or admin token."""
    return await principal_of(_identity(request), request.scope)


Reader = Annotated[Principal, Depends(reader)]


async def fleet_reader(principal: Reader) -> Principal:
    """Dependency: an API caller who may see the whole fleet (not limited to a unit)."""
    if principal.unit is not None:
        raise FleetReaderRequired
    return principal


async def admin(principal: Reader) -> Principal:
    """Dependency: an API caller with an admin token."""
    if not principal.is_admin:
        raise AdminRequired
    return principal


async def admin_write(
    request: Request, principal: Annotated[Principal, Depends(admin)]
) -> Principal:
    """Dependency: an admin changing something, within the admin write rate of its token."""
    await run_in_threadpool(_identity(request).count_admin_write, principal)
    return principal


async def responder(request: Request, principal: Reader) -> Principal:
    """Dependency: an admin, or a respond token (limited to its unit), changing a finding's
    case; counted against the same write rate as admins'."""
    if not principal.may_respond:
        raise ResponderRequired
    await run_in_threadpool(_identity(request).count_admin_write, principal)
    return principal


Responder = Annotated[Principal, Depends(responder)]


async def calling_host(request: Request) -> Host:
    """Dependency: a host with its host token."""
    return await calling_host_of(_identity(request), request.scope)


CallingHost = Annotated[Host, Depends(calling_host)]


class Access(enum.IntEnum):
    """What a route requires of its caller before its body is read, weakest first."""

    NONE = 0
    HOST = 1
    READER = 2
    RESPONDER = 3
    ADMIN = 4


# The dependencies that state a route's access: a route requires the strongest it uses.
ACCESS: dict[Callable[..., Any], Access] = {
    calling_host: Access.HOST,
    reader: Access.READER,
    responder: Access.RESPONDER,
    admin: Access.ADMIN,
}
