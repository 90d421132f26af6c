"""Dashboard sessions through the API: an admin lists them and ends one
(`fleetwatch session list|revoke`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict

from fleetwatch.collector.refusals import NoSuchSession
from fleetwatch.collector.web.bearer import admin, admin_write

router = APIRouter()
MAX_ID = 2**62


class SessionView(BaseModel):
    # built from a SessionRow: SessionView.model_validate(row); never its hash or CSRF token
    model_config = ConfigDict(from_attributes=True)

    id: int
    token_id: int | None
    name: str
    kind: str
    unit: str | None
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None


@router.get(
    "/api/v1/sessions",
    response_model=list[SessionView],
    tags=["admin"],
    dependencies=[Depends(admin)],
)
def list_sessions(request: Request) -> list[SessionView]:
    """Dashboard sessions, newest first, ended ones included."""
    rows = request.app.state.service.sessions.list()
    return [SessionView.model_validate(row) for row in rows]


@router.delete("/api/v1/sessions/{session_id}", tags=["admin"], dependencies=[Depends(admin_write)])
def revoke_session(
    request: Request, session_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> dict[str, str]:
    """End a dashboard session: its browser must sign in again."""
    if not request.app.state.service.sessions.revoke(session_id):
        raise NoSuchSession(f"no open session {session_id}")
    return {"detail": f"session {session_id} ended"}
