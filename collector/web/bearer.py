"""Who is calling: the bearer token of a request, and what each route requires of it.

Every caller authenticates with ``Authorization: Bearer <token>``: a host with its host token,
people and scripts with an API token. The header is parsed here and nowhere else. Routes state
what they need as a dependency (`Reader`, `admin`, `HostToken`); the report door, outside
FastAPI, asks `host_of`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.auth.identity import Principal
from fleetwatch.collector.refusals import AdminRequired, MissingToken, UnknownToken

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Identity


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; refuse anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken
    return token


async def host_of(identity: Identity, authorization: str | None) -> str:
    """The host a request's host token belongs to (from the cache when it can be)."""
    token = bearer_token(authorization)
    host_id = identity.cached_host(token)
    if host_id is None:
        host_id = await run_in_threadpool(identity.host_for, token)
    if host_id is None:
        raise UnknownToken("host token not accepted (unknown or revoked)")
    return host_id


async def bearer(request: Request) -> str:
    """Dependency: the caller's bearer token, whatever its kind."""
    return bearer_token(request.headers.get("authorization"))


def reader(request: Request, token: Annotated[str, Depends(bearer)]) -> Principal:
    """Dependency: an API caller with a read or admin token."""
    identity: Identity = request.app.state.service.identity
    principal = identity.principal_for(token)
    if principal is None:
        raise UnknownToken("API token not accepted")
    return principal


def admin(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """Dependency: an API caller with an admin token."""
    if not principal.is_admin:
        raise AdminRequired
    return principal


Reader = Annotated[Principal, Depends(reader)]
# A host token, unchecked: the route hands it to `Identity`, which checks it as it uses it.
HostToken = Annotated[str, Depends(bearer)]
