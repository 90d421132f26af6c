"""``GET /api/v1/packages/installed``: the versions of named packages on reporting hosts.

Names are policy patterns (shell-style wildcards), as ``min_versions`` keys are.

What `fleetwatch policy check` asks to warn of a ``min_versions`` entry without the epoch the
package has on the hosts: the policy file being checked may not be the one loaded, so the
caller resolves baselines itself and needs the facts per host.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.patterns import name_matches
from fleetwatch.collector.web.bearer import Reader  # noqa: TC001  (FastAPI reads it)
from fleetwatch.collector.web.routes import service
from fleetwatch.schema import Name, PackagesData

router = APIRouter()
_WILD = frozenset("*?[")
MAX_NAMES = 200


class InstalledVersions(BaseModel):
    hosts: dict[str, dict[str, list[str]]] = Field(
        description="host_id -> package name -> installed versions (one per architecture), "
        "for the hosts the caller may see that reported any of the packages."
    )


@router.get("/api/v1/packages/installed", response_model=InstalledVersions, tags=["read"])
def installed_versions(
    request: Request,
    principal: Reader,
    name: Annotated[list[Name], Query(min_length=1, max_length=MAX_NAMES)],
) -> InstalledVersions:
    """Installed versions of the named packages, per host (unit-scoped like the rest)."""
    svc = service(request)
    policy = svc.policy.current
    wanted = set(name)
    # a plain name shows in the stored JSON as itself: most hosts are skipped unparsed
    plain = (
        [json.dumps(n).encode() for n in wanted]
        if not any(_WILD & set(n) for n in wanted)
        else None
    )
    found: dict[str, dict[str, list[str]]] = {}
    with svc.store.read() as conn:
        for host in svc.store.hosts.all(conn):
            if not principal.may_see(policy.for_host(host.host_id).unit or host.unit):
                continue
            state = host.sections.get("packages")
            content_hash = state.hash if state is not None else None  # stale or not
            payload = svc.store.blobs.get(conn, content_hash) if content_hash else None
            if payload is None or (plain is not None and not any(n in payload for n in plain)):
                continue
            versions: dict[str, list[str]] = {}
            for package in PackagesData.model_validate_json(payload).rows():
                if any(name_matches(pattern, package.name) for pattern in wanted):
                    versions.setdefault(package.name, []).append(package.version)
            if versions:
                found[host.host_id] = versions
    return InstalledVersions(hosts=found)
