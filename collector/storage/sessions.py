"""Browser sessions of the dashboard: who signed in with which API token, until when.

Only a hash of the session id is stored: a copy of the database cannot be used to take over
a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import insert, or_, select, update

from fleetwatch.collector.storage.tables import api_tokens, dashboard_sessions

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection


@dataclass(frozen=True)
class SessionRow:
    """A stored session (without its id, which only the browser holds)."""

    id: int
    session_hash: str
    token_id: int | None
    name: str
    kind: str
    unit: str | None
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None


class Sessions:
    """The ``dashboard_sessions`` table."""

    def add(  # noqa: PLR0913  (one parameter per column a new session sets)
        self,
        conn: Connection,
        *,
        session_hash: str,
        token_id: int | None,
        name: str,
        kind: str,
        unit: str | None,
        csrf_token: str,
        now: datetime,
        expires_at: datetime,
    ) -> int:
        """Store a new session; its row id."""
        done = conn.execute(
            insert(dashboard_sessions).values(
                session_hash=session_hash,
                token_id=token_id,
                name=name,
                kind=kind,
                unit=unit,
                csrf_token=csrf_token,
                created_at=now,
                expires_at=expires_at,
                last_seen_at=now,
            )
        )
        return int(done.inserted_primary_key[0])  # type: ignore[index]

    def active(self, conn: Connection, session_hash: str, now: datetime) -> SessionRow | None:
        """The session of this hash, unless it expired or was revoked, or the API token it
        was opened with was revoked since."""
        row = conn.execute(
            select(dashboard_sessions)
            .select_from(
                dashboard_sessions.outerjoin(
                    api_tokens, api_tokens.c.id == dashboard_sessions.c.token_id
                )
            )
            .where(
                dashboard_sessions.c.session_hash == session_hash,
                dashboard_sessions.c.revoked_at.is_(None),
                dashboard_sessions.c.expires_at > now,
                or_(dashboard_sessions.c.token_id.is_(None), api_tokens.c.revoked_at.is_(None)),
            )
        ).first()
        return SessionRow(**row._mapping) if row else None

    def touch(self, conn: Connection, session_id: int, now: datetime) -> None:
        conn.execute(
            update(dashboard_sessions)
            .where(dashboard_sessions.c.id == session_id)
            .values(last_seen_at=now)
        )

    def all(self, conn: Connection) -> list[SessionRow]:
        """Every session, newest first."""
        rows = conn.execute(select(dashboard_sessions).order_by(dashboard_sessions.c.id.desc()))
        return [SessionRow(**r._mapping) for r in rows]

    def revoke(self, conn: Connection, session_id: int, now: datetime) -> bool:
        """End one session; False if there is no such session still open."""
        done = conn.execute(
            update(dashboard_sessions)
            .where(dashboard_sessions.c.id == session_id, dashboard_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(done.rowcount)

    def revoke_by_hash(self, conn: Connection, session_hash: str, now: datetime) -> None:
        """End the session of this hash (signing out)."""
        conn.execute(
            update(dashboard_sessions)
            .where(
                dashboard_sessions.c.session_hash == session_hash,
                dashboard_sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
