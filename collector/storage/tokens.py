"""Tokens as the collector keeps them: only their SHA-256, never the token itself.

Host tokens let an agent report as its host; API tokens let people and scripts read or
administer (see `fleetwatch.collector.auth.tokens` for how tokens are made and hashed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, insert, select, update

from fleetwatch.collector.rate_limits import Bucket
from fleetwatch.collector.storage.tables import api_tokens, host_tokens, hosts

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection, Select


@dataclass(frozen=True)
class ApiTokenRow:
    """An API token, without its hash."""

    id: int
    name: str
    kind: str
    unit: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenHolder(NamedTuple):
    """The host an active token belongs to, as the token check reads it."""

    host_id: str
    older_active: bool
    report_bucket: Bucket | None


def _holder_query() -> Select[Any]:
    """The host of an active token (``:token_hash``), whether older tokens of that host are
    active, and the host's report bucket. Built once: an aliased table's columns are built
    anew with each alias, which cost more than the query on every report a cold cache took."""
    older = host_tokens.alias("older")
    older_active = (
        select(older.c.id)
        .where(
            older.c.host_id == host_tokens.c.host_id,
            older.c.revoked_at.is_(None),
            older.c.id < host_tokens.c.id,
        )
        .exists()
    )
    return (
        select(
            host_tokens.c.host_id,
            older_active.label("older"),
            hosts.c.report_tokens,
            hosts.c.report_tokens_at,
        )
        .join(hosts, hosts.c.host_id == host_tokens.c.host_id)
        .where(
            host_tokens.c.token_hash == bindparam("token_hash"),
            host_tokens.c.revoked_at.is_(None),
        )
    )


_HOLDER = _holder_query()


class HostTokens:
    """The ``host_tokens`` table: a host may hold several while a rotation is under way."""

    def add(self, conn: Connection, host_id: str, token_hash: str, now: datetime) -> None:
        conn.execute(
            insert(host_tokens).values(host_id=host_id, token_hash=token_hash, created_at=now)
        )

    def revoke(
        self,
        conn: Connection,
        host_id: str,
        now: datetime,
        *,
        except_hash: str | None = None,
    ) -> int:
        """Revoke the host's active tokens (but the one of ``except_hash``); return how many."""
        query = update(host_tokens).where(
            host_tokens.c.host_id == host_id, host_tokens.c.revoked_at.is_(None)
        )
        if except_hash is not None:
            query = query.where(host_tokens.c.token_hash != except_hash)
        return int(conn.execute(query.values(revoked_at=now)).rowcount)

    def revoked_since(self, conn: Connection, since: datetime) -> list[str]:
        """The hashes of the host tokens revoked at ``since`` or later."""
        return list(
            conn.execute(
                select(host_tokens.c.token_hash).where(host_tokens.c.revoked_at >= since)
            ).scalars()
        )

    def host_for(self, conn: Connection, token_hash: str) -> tuple[str, bool] | None:
        """The host of an active token, and whether older tokens of that host are active."""
        found = self.holder(conn, token_hash)
        return None if found is None else (found.host_id, found.older_active)

    def holder(self, conn: Connection, token_hash: str) -> TokenHolder | None:
        """The host of an active token, whether older tokens of that host are active, and
        the host's report rate bucket (see `fleetwatch.collector.rate_limits`)."""
        # one round trip: a token is checked on every report the token cache does not cover
        row = conn.execute(_HOLDER, {"token_hash": token_hash}).first()
        if row is None:
            return None
        bucket = (
            None
            if row.report_tokens is None or row.report_tokens_at is None
            else Bucket(row.report_tokens, row.report_tokens_at)
        )
        return TokenHolder(row.host_id, bool(row.older), bucket)


# every column but the hash, which never leaves this module
_API_TOKEN_COLUMNS = [c for c in api_tokens.c if c.name != "token_hash"]


class ApiTokens:
    """The ``api_tokens`` table."""

    def active(self, conn: Connection, token_hash: str) -> ApiTokenRow | None:
        """The token of this hash, unless it is revoked."""
        row = conn.execute(
            select(*_API_TOKEN_COLUMNS).where(
                api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)
            )
        ).first()
        return None if row is None else ApiTokenRow(**row._mapping)

    def add(
        self,
        conn: Connection,
        *,
        name: str,
        kind: str,
        unit: str | None,
        token_hash: str,
        now: datetime,
    ) -> int:
        """Keep a new token's hash; return the token's id."""
        result = conn.execute(
            insert(api_tokens)
            .values(name=name, kind=kind, unit=unit, token_hash=token_hash, created_at=now)
            .returning(api_tokens.c.id)
        )
        return int(result.scalar_one())

    def all(self, conn: Connection) -> list[ApiTokenRow]:
        """Every token, revoked ones included, oldest first."""
        return [
            ApiTokenRow(**r._mapping)
            for r in conn.execute(select(*_API_TOKEN_COLUMNS).order_by(api_tokens.c.id))
        ]

    def revoke(self, conn: Connection, token_id: int, now: datetime) -> bool:
        """Revoke a token; False if there is no such active token."""
        done = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(done.rowcount)
