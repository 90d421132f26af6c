"""Dashboard sessions: a browser signs in once with an API token and then holds a session id.

The browser never keeps the token: it holds a random session id in an HttpOnly cookie, and
the database holds only the id's SHA-256 with who signed in (the token's name, kind and unit),
a CSRF token for the session's forms, and when it expires. A session ends when it expires
(``dashboard_session_hours`` after sign-in, or ``dashboard_idle_minutes`` without a request),
when it is signed out or revoked (`fleetwatch session revoke`), or when the API token it was
opened with is revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from fleetwatch.collector.auth.identity import Principal
from fleetwatch.collector.auth.tokens import same_secret, token_hash
from fleetwatch.collector.refusals import FormTokenRejected, UnknownToken

if TYPE_CHECKING:
    from fleetwatch.collector.auth.identity import Identity
    from fleetwatch.collector.settings import CollectorSettings
    from fleetwatch.collector.storage.sessions import SessionRow
    from fleetwatch.collector.storage.store import Store

# a session's last request is written at most this often (not at every page)
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who it is, and the token its forms must carry."""

    id: int
    principal: Principal
    csrf_token: str
    expires_at: datetime

    def check_form(self, sent: str | None) -> None:
        """Refuse a form that does not carry this session's CSRF token."""
        if not sent or not same_secret(sent, self.csrf_token):
            raise FormTokenRejected


class SessionKeeper:
    """Opens, finds and ends dashboard sessions."""

    def __init__(self, store: Store, identity: Identity, settings: CollectorSettings) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings

    def sign_in(self, token: str, now: datetime | None = None) -> str:
        """A new session for the holder of an admin, read or respond API token: its id, for
        the cookie. Raises `UnknownToken` for any other token."""
        principal = self.identity.principal_for(token.strip())
        if principal is None:
            raise UnknownToken("API token not accepted")
        now = now or datetime.now(UTC)
        session_id = secrets.token_urlsafe(32)
        with self.store.write() as conn:
            self.store.sessions.add(
                conn,
                session_hash=token_hash(session_id),
                token_id=principal.token_id,
                name=principal.name,
                kind=principal.kind,
                unit=principal.unit,
                csrf_token=secrets.token_urlsafe(32),
                now=now,
                expires_at=now + timedelta(hours=self.settings.dashboard_session_hours),
            )
        return session_id

    def find(self, session_id: str | None, now: datetime | None = None) -> Session | None:
        """The live session of this id, or None (unknown, expired, idle too long, revoked)."""
        if not session_id:
            return None
        now = now or datetime.now(UTC)
        with self.store.read() as conn:
            row = self.store.sessions.active(conn, token_hash(session_id), now)
        if row is None or not self._still_valid(row, now):
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            with self.store.write() as conn:
                self.store.sessions.touch(conn, row.id, now)
        kind: Literal["admin", "read", "respond"] = (
            "admin" if row.kind == "admin" else "respond" if row.kind == "respond" else "read"
        )
        principal = Principal(
            name=row.name,
            kind=kind,
            unit=row.unit,
            token_id=row.token_id,
        )
        return Session(row.id, principal, row.csrf_token, row.expires_at)

    def _still_valid(self, row: SessionRow, now: datetime) -> bool:
        idle = timedelta(minutes=self.settings.dashboard_idle_minutes)
        if now - row.last_seen_at > idle:
            return False
        # a session opened with the settings' admin token ends when that token is removed
        return row.token_id is not None or self.settings.admin_token is not None

    def sign_out(self, session_id: str, now: datetime | None = None) -> None:
        with self.store.write() as conn:
            self.store.sessions.revoke_by_hash(
                conn, token_hash(session_id), now or datetime.now(UTC)
            )

    def list(self) -> list[SessionRow]:
        with self.store.read() as conn:
            return self.store.sessions.all(conn)

    def revoke(self, session_id: int, now: datetime | None = None) -> bool:
        with self.store.write() as conn:
            return self.store.sessions.revoke(conn, session_id, now or datetime.now(UTC))
