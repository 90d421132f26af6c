"""Persistence: every SQL statement the collector runs, on SQLite or PostgreSQL.

Writes go through `Store.write()`: one transaction that holds the database's write lock on
SQLite (taken at BEGIN, so writers queue instead of deadlocking) and row locks on PostgreSQL
(`lock_host` serialises the reports of one host).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zstandard
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fleetwatch.collector.storage.db import WRITE_OPTION
from fleetwatch.collector.storage.tables import (
    api_tokens,
    blobs,
    findings,
    host_tokens,
    hosts,
    reports,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime


@dataclass(frozen=True)
class HostRow:
    host_id: str
    unit: str | None
    enrolled_at: datetime
    reenroll_until: datetime | None
    instance_id: str | None
    last_sequence: int | None
    last_collected_at: datetime | None
    last_received_at: datetime | None
    agent_version: str | None
    sections: dict[str, dict[str, Any]]
    conditions: dict[str, dict[str, str]]
    dropped_total: int
    spool_error: str | None

    @property
    def observed_at(self) -> datetime | None:
        """When the latest report's facts were true: collected, unless the clock was ahead."""
        if self.last_collected_at is None or self.last_received_at is None:
            return None
        return min(self.last_collected_at, self.last_received_at)


@dataclass(frozen=True)
class FindingRow:
    id: int
    host_id: str
    rule: str
    key: str
    severity: str
    detail: str
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None


@dataclass(frozen=True)
class ReportRow:
    id: int
    host_id: str
    instance_id: str
    sequence: int
    collected_at: datetime
    received_at: datetime
    agent_version: str
    sections: dict[str, str]
    errors: dict[str, str]
    missing: list[str]
    dropped: int
    spool_error: str | None


@dataclass(frozen=True)
class ApiTokenRow:
    id: int
    name: str
    kind: str
    unit: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def storable(text: str) -> str:
    """Agent text made safe to store: PostgreSQL text cannot hold NUL."""
    return text.replace("\x00", "\ufffd")


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time anyway; queueing here is fairer than its busy loop.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an exception."""
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(select(1)).scalar_one()

    def _insert_ignore(self, table: Any) -> Any:
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        return make(table).on_conflict_do_nothing()

    # -- hosts and their tokens ---------------------------------------------------------

    @staticmethod
    def _host(row: Any) -> HostRow:
        return HostRow(
            **{**row._mapping, "sections": row.sections or {}, "conditions": row.conditions or {}}
        )

    def get_host(self, conn: Connection, host_id: str, *, lock: bool = False) -> HostRow | None:
        return self.get_hosts(conn, [host_id], lock=lock).get(host_id)

    def all_hosts(self, conn: Connection) -> list[HostRow]:
        return [self._host(r) for r in conn.execute(select(hosts).order_by(hosts.c.host_id))]

    def create_host(self, conn: Connection, host_id: str, unit: str | None, now: datetime) -> None:
        conn.execute(
            insert(hosts).values(
                host_id=host_id,
                unit=unit,
                enrolled_at=now,
                sections={},
                conditions={},
                dropped_total=0,
            )
        )

    def set_reenroll(self, conn: Connection, host_id: str, until: datetime | None) -> bool:
        done = conn.execute(
            update(hosts).where(hosts.c.host_id == host_id).values(reenroll_until=until)
        )
        return bool(done.rowcount)

    def active_host_tokens(self, conn: Connection, host_id: str) -> int:
        return int(
            conn.execute(
                select(func.count())
                .select_from(host_tokens)
                .where(host_tokens.c.host_id == host_id, host_tokens.c.revoked_at.is_(None))
            ).scalar_one()
        )

    def add_host_token(
        self, conn: Connection, host_id: str, token_hash: str, now: datetime
    ) -> None:
        conn.execute(
            insert(host_tokens).values(
                host_id=host_id,
                token_hash=token_hash,
                created_at=now,
            )
        )

    def revoke_host_tokens(
        self,
        conn: Connection,
        host_id: str,
        now: datetime,
        *,
        except_hash: str | None = None,
    ) -> int:
        query = update(host_tokens).where(
            host_tokens.c.host_id == host_id, host_tokens.c.revoked_at.is_(None)
        )
        if except_hash is not None:
            query = query.where(host_tokens.c.token_hash != except_hash)
        return int(conn.execute(query.values(revoked_at=now)).rowcount)

    def host_for_token(self, conn: Connection, token_hash: str) -> tuple[str, bool] | None:
        """The host of an active token, and whether older tokens of that host are active."""
        row = conn.execute(
            select(host_tokens.c.id, host_tokens.c.host_id).where(
                host_tokens.c.token_hash == token_hash,
                host_tokens.c.revoked_at.is_(None),
            )
        ).first()
        if row is None:
            return None
        older = conn.execute(
            select(func.count())
            .select_from(host_tokens)
            .where(
                host_tokens.c.host_id == row.host_id,
                host_tokens.c.revoked_at.is_(None),
                host_tokens.c.id < row.id,
            )
        ).scalar_one()
        return row.host_id, bool(older)

    # -- API tokens ---------------------------------------------------------------------

    def api_token(self, conn: Connection, token_hash: str) -> ApiTokenRow | None:
        row = conn.execute(
            select(api_tokens).where(
                api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        values = dict(row._mapping)
        values.pop("token_hash")
        return ApiTokenRow(**values)

    def add_api_token(
        self,
        conn: Connection,
        *,
        name: str,
        kind: str,
        unit: str | None,
        token_hash: str,
        now: datetime,
    ) -> int:
        result = conn.execute(
            insert(api_tokens)
            .values(
                name=name,
                kind=kind,
                unit=unit,
                token_hash=token_hash,
                created_at=now,
            )
            .returning(api_tokens.c.id)
        )
        return int(result.scalar_one())

    def list_api_tokens(self, conn: Connection) -> list[ApiTokenRow]:
        columns = [c for c in api_tokens.c if c.name != "token_hash"]
        return [
            ApiTokenRow(**r._mapping)
            for r in conn.execute(select(*columns).order_by(api_tokens.c.id))
        ]

    def revoke_api_token(self, conn: Connection, token_id: int, now: datetime) -> bool:
        done = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(done.rowcount)

    # -- reports and their sections -----------------------------------------------------

    def get_hosts(
        self, conn: Connection, host_ids: Iterable[str], *, lock: bool = False
    ) -> dict[str, HostRow]:
        """Hosts by id; with ``lock`` on PostgreSQL their rows stay locked until commit."""
        wanted = sorted(set(host_ids))
        if not wanted:
            return {}
        # in id order, so that two writers locking overlapping sets cannot deadlock
        query = select(hosts).where(hosts.c.host_id.in_(wanted)).order_by(hosts.c.host_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        return {row.host_id: self._host(row) for row in conn.execute(query)}

    def find_report(
        self, conn: Connection, host_id: str, instance_id: str, sequence: int
    ) -> ReportRow | None:
        row = conn.execute(
            select(reports).where(
                reports.c.host_id == host_id,
                reports.c.instance_id == instance_id,
                reports.c.sequence == sequence,
            )
        ).first()
        return None if row is None else ReportRow(**row._mapping)

    def existing_blobs(self, conn: Connection, hashes: Iterable[str]) -> set[str]:
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        return set(conn.execute(select(blobs.c.hash).where(blobs.c.hash.in_(wanted))).scalars())

    def add_blobs(
        self, conn: Connection, contents: list[tuple[str, str, bytes]], now: datetime
    ) -> None:
        """Store (hash, section, JSON) contents, compressed; hashes already held are skipped."""
        if contents:
            compress = zstandard.ZstdCompressor(level=3).compress
            conn.execute(
                self._insert_ignore(blobs),
                [
                    {
                        "hash": content_hash,
                        "section": section,
                        "data": compress(payload),
                        "size": len(payload),
                        "created_at": now,
                    }
                    for content_hash, section, payload in contents
                ],
            )

    def release_blobs(self, conn: Connection, released: dict[str, datetime]) -> None:
        """Hosts moved on from these contents (at these times): prunable after retention."""
        if released:
            conn.execute(
                update(blobs)
                .where(blobs.c.hash == bindparam("b_hash"))
                .values(released_at=bindparam("b_at")),
                [{"b_hash": h, "b_at": at} for h, at in sorted(released.items())],
            )

    def get_blob(self, conn: Connection, content_hash: str) -> bytes | None:
        data = conn.execute(
            select(blobs.c.data).where(blobs.c.hash == content_hash)
        ).scalar_one_or_none()
        return None if data is None else zstandard.ZstdDecompressor().decompress(data)

    def add_reports(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(insert(reports), rows)

    def update_hosts(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Set the given columns of hosts; each row has ``host_id`` and the columns to set."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
        for keys, group in by_columns.items():
            columns = [key for key in keys if key != "host_id"]
            statement = (
                update(hosts)
                .where(hosts.c.host_id == bindparam("b_host_id"))
                .values({column: bindparam(f"b_{column}") for column in columns})
            )
            conn.execute(statement, [{f"b_{k}": v for k, v in row.items()} for row in group])

    def list_reports(
        self, conn: Connection, host_id: str, limit: int, before_id: int | None = None
    ) -> list[ReportRow]:
        query = select(reports).where(reports.c.host_id == host_id)
        if before_id is not None:
            query = query.where(reports.c.id < before_id)
        query = query.order_by(reports.c.id.desc()).limit(limit)
        return [ReportRow(**r._mapping) for r in conn.execute(query)]

    # -- findings -----------------------------------------------------------------------

    def open_findings_of(
        self, conn: Connection, host_ids: Iterable[str]
    ) -> dict[str, list[FindingRow]]:
        wanted = sorted(set(host_ids))
        found: dict[str, list[FindingRow]] = {h: [] for h in wanted}
        if not wanted:
            return found
        rows = conn.execute(
            select(findings).where(findings.c.host_id.in_(wanted), findings.c.resolved_at.is_(None))
        )
        for row in rows:
            found[row.host_id].append(FindingRow(**row._mapping))
        return found

    def open_findings(self, conn: Connection, host_id: str) -> list[FindingRow]:
        return self.open_findings_of(conn, [host_id])[host_id]

    def add_findings(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(insert(findings), rows)

    def set_findings(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Update findings by id; every row carries the same keys, ``id`` among them."""
        if not rows:
            return
        columns = [key for key in rows[0] if key != "id"]
        statement = (
            update(findings)
            .where(findings.c.id == bindparam("b_id"))
            .values({column: bindparam(f"b_{column}") for column in columns})
        )
        conn.execute(statement, [{f"b_{k}": v for k, v in row.items()} for row in rows])

    def open_finding_counts(self, conn: Connection) -> dict[str, dict[str, int]]:
        """host -> severity -> number of open findings."""
        rows = conn.execute(
            select(findings.c.host_id, findings.c.severity, func.count())
            .where(findings.c.resolved_at.is_(None))
            .group_by(findings.c.host_id, findings.c.severity)
        )
        counts: dict[str, dict[str, int]] = {}
        for host_id, severity, count in rows:
            counts.setdefault(host_id, {})[severity] = int(count)
        return counts

    def query_findings(
        self,
        conn: Connection,
        *,
        host_ids: list[str] | None = None,
        rule: str | None = None,
        is_open: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[FindingRow]:
        query = select(findings)
        if host_ids is not None:
            query = query.where(findings.c.host_id.in_(host_ids))
        if rule is not None:
            query = query.where(findings.c.rule == rule)
        if is_open is True:
            query = query.where(findings.c.resolved_at.is_(None))
        elif is_open is False:
            query = query.where(findings.c.resolved_at.is_not(None))
        query = (
            query.order_by(findings.c.host_id, findings.c.rule, findings.c.key, findings.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [FindingRow(**r._mapping) for r in conn.execute(query)]

    # -- housekeeping -------------------------------------------------------------------

    def prune(self, conn: Connection, older_than: datetime) -> tuple[int, int]:
        """Delete old reports (never a host's latest) and contents no host holds any more.

        A content released before ``older_than`` can only be referred to by reports that are
        older still, which go in the same pass. Returns (reports deleted, contents deleted).
        """
        latest = select(func.max(reports.c.id)).group_by(reports.c.host_id).scalar_subquery()
        gone_reports = conn.execute(
            delete(reports).where(reports.c.received_at < older_than, reports.c.id.not_in(latest))
        ).rowcount
        current = {
            section["hash"]
            for (sections,) in conn.execute(select(hosts.c.sections))
            for section in (sections or {}).values()
            if section.get("hash")
        }
        released = [
            h
            for (h,) in conn.execute(select(blobs.c.hash).where(blobs.c.released_at < older_than))
            if h not in current
        ]
        for start in range(0, len(released), 500):
            conn.execute(delete(blobs).where(blobs.c.hash.in_(released[start : start + 500])))
        return int(gone_reports or 0), len(released)
