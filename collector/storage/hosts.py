"""Hosts and their latest state: what the newest report said, section by section."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ARRAY, any_, bindparam, delete, exists, insert, or_, select, text, update

from fleetwatch.collector.rate_limits import Bucket
from fleetwatch.collector.storage.tables import OBSERVED, host_silences, hosts
from fleetwatch.collector.storage.transactions import as_arrays

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy import Connection, Dialect, Result, Select, TextClause, Update

    from fleetwatch.collector.storage.transactions import Database

MISSING_BASE = "sent as a hash the collector does not hold"

# Sections whose content differs in every report (load, memory and disk figures): the host row
# keeps their latest content inline, rather than one stored content per report.
INLINE_SECTIONS = frozenset({"resources"})


@dataclass(frozen=True, slots=True)
class SectionState:
    """One section of a host as its latest reports left it.

    ``hash`` is the content last accepted; ``error`` (the agent could not collect it) and
    ``missing`` (it came as a hash the collector does not hold) say why the latest report
    lacked it. While either is set the content is stale: kept, but not for the rules.
    """

    hash: str | None = None
    error: str | None = None
    missing: str | None = None

    @property
    def current(self) -> str | None:
        """The hash of the content the latest report confirmed, or None."""
        return None if self.error or self.missing else self.hash

    def failed(self, error: str) -> SectionState:
        """This section after a report that could not collect it."""
        return SectionState(self.hash, error, self.missing)

    def gone_missing(self) -> SectionState:
        """This section after a report that sent a hash the collector does not hold."""
        return SectionState(self.hash, self.error, MISSING_BASE)


# since when each aging condition holds, by kind then key:
# {"security_update": {package: first seen}, "reboot_required": {"": first seen}}
Conditions = Mapping[str, Mapping[str, datetime]]


# The JSON columns, converted here and nowhere else. A section's JSON object holds only the
# keys that are set ({"hash": ...}, {"hash": ..., "error": ...}); conditions hold ISO times.


def _sections_from_json(raw: Mapping[str, Mapping[str, str]] | None) -> dict[str, SectionState]:
    return {
        name: SectionState(state.get("hash"), state.get("error"), state.get("missing"))
        for name, state in (raw or {}).items()
    }


def _sections_to_json(sections: Mapping[str, SectionState]) -> dict[str, dict[str, str]]:
    return {
        name: {
            key: value
            for key, value in (
                ("hash", state.hash),
                ("error", state.error),
                ("missing", state.missing),
            )
            if value is not None
        }
        for name, state in sections.items()
    }


def _conditions_from_json(raw: Mapping[str, Mapping[str, str]] | None) -> Conditions:
    return {
        kind: {key: datetime.fromisoformat(since) for key, since in keys.items()}
        for kind, keys in (raw or {}).items()
    }


def _conditions_to_json(conditions: Conditions) -> dict[str, dict[str, str]]:
    return {
        kind: {key: since.isoformat() for key, since in keys.items()}
        for kind, keys in conditions.items()
    }


_TO_COLUMN: dict[str, Callable[[Any], Any]] = {
    "sections": _sections_to_json,
    "conditions": _conditions_to_json,
    "inline": dict,
}


@dataclass(frozen=True)
class HostRow:
    """An enrolled host, with the state its newest report left."""

    host_id: str
    unit: str | None
    enrolled_at: datetime
    reenroll_until: datetime | None
    instance_id: str | None
    last_sequence: int | None
    last_collected_at: datetime | None
    last_received_at: datetime | None
    agent_version: str | None
    sections: Mapping[str, SectionState]  # by section name
    conditions: Conditions
    dropped_total: int
    spool_error: str | None
    # latest content (canonical JSON) of INLINE_SECTIONS, by section name
    inline: Mapping[str, str]
    # what the host was last evaluated against (`compliance.reevaluation`)
    baseline_digest: str | None = None
    # the host's report rate bucket, shared by every collector process (`rate_limits`)
    report_tokens: float | None = None
    report_tokens_at: float | None = None

    @property
    def report_bucket(self) -> Bucket | None:
        """The host's report rate bucket as stored; None before its first report."""
        if self.report_tokens is None or self.report_tokens_at is None:
            return None
        return Bucket(self.report_tokens, self.report_tokens_at)

    def with_report_bucket(self, bucket: Bucket) -> HostRow:
        return replace(self, report_tokens=bucket.tokens, report_tokens_at=bucket.at)

    @property
    def observed_at(self) -> datetime | None:
        """When the latest report's facts were true: collected, unless the clock was ahead."""
        if self.last_collected_at is None or self.last_received_at is None:
            return None
        return min(self.last_collected_at, self.last_received_at)


@dataclass(frozen=True, slots=True)
class Heard:
    """What the silent-host watch reads of a host: when it was last heard from, never its
    sections (see `compliance.watch`)."""

    host_id: str
    unit: str | None
    enrolled_at: datetime
    observed_at: datetime | None  # `HostRow.observed_at`; None: never reported


_HEARD = (hosts.c.host_id, hosts.c.unit, hosts.c.enrolled_at, OBSERVED.label("observed_at"))


# every column but the key, in the table's order
_STATE_COLUMNS = tuple(f.name for f in fields(HostRow) if f.name != "host_id")


@dataclass(frozen=True)
class HostChange:
    """A host's row as it was and as a report left it; only the columns that differ are written.

    The JSON columns (sections, conditions) rarely change from one report to the next, and
    leaving them out keeps a report's update small.
    """

    before: HostRow
    after: HostRow

    def __post_init__(self) -> None:
        if self.before.host_id != self.after.host_id:
            msg = f"a change from host {self.before.host_id!r} to {self.after.host_id!r}"
            raise ValueError(msg)

    @property
    def host_id(self) -> str:
        return self.after.host_id

    def columns(self) -> dict[str, Any]:
        """The new value of every column that changed, by column name, as stored."""
        before, after = self.before, self.after
        changed = {
            name: getattr(after, name)
            for name in _STATE_COLUMNS
            if getattr(after, name) != getattr(before, name)
        }
        for name, to_column in _TO_COLUMN.items():
            if name in changed:
                changed[name] = to_column(changed[name])
        return changed


def _hosts(result: Result[Any]) -> list[HostRow]:
    """Hosts from a result of every column (their names looked up once, not per row)."""
    names = tuple(result.keys())
    return [_host(dict(zip(names, row, strict=True))) for row in result]


def _host(columns: dict[str, Any]) -> HostRow:
    columns["sections"] = _sections_from_json(columns["sections"])
    columns["conditions"] = _conditions_from_json(columns["conditions"])
    columns["inline"] = dict(columns["inline"] or {})
    return HostRow(**columns)


_IDS_AT_ONCE = 5000  # ids in one IN list: well within every database's limit on parameters


# Statements run on every batch of reports, built once (per database kind, per set of
# columns): building and keying a statement cost more than running it.


@functools.cache
def _by_ids(dialect: str, *, lock: bool) -> Select[Any]:
    """Hosts whose id is among ``:ids``, in id order, so that two writers locking
    overlapping sets cannot deadlock; with ``lock``, locked until commit on PostgreSQL (on
    SQLite a write transaction holds the whole database from its BEGIN)."""
    ids = (
        hosts.c.host_id == any_(bindparam("ids", type_=ARRAY(hosts.c.host_id.type)))
        if dialect == "postgresql"
        else hosts.c.host_id.in_(bindparam("ids", expanding=True))
    )
    query = select(hosts).where(ids).order_by(hosts.c.host_id)
    return query.with_for_update() if lock and dialect == "postgresql" else query


@functools.lru_cache(maxsize=256)
def _update_statement(names: tuple[str, ...]) -> Update:
    """Set these columns (``:b_<name>``) of the host ``:b_host_id``."""
    return (
        update(hosts)
        .where(hosts.c.host_id == bindparam("b_host_id"))
        .values({name: bindparam(f"b_{name}") for name in names})
    )


@functools.lru_cache(maxsize=256)
def _update_from_json(names: tuple[str, ...], dialect: Dialect) -> TextClause:
    """PostgreSQL: set these columns of many hosts in one statement, from one JSON array of
    rows (``:rows``, made by `_json_rows`). One document rather than an array per column:
    psycopg quotes every element of a text array with regular expressions, and the JSON
    columns' text is all quotes; ``json.dumps`` writes the whole batch in C."""
    fields = ", ".join(
        f"{name} {hosts.c[name].type.compile(dialect=dialect)}" for name in ("host_id", *names)
    )
    assignments = ", ".join(f"{name} = given.{name}" for name in names)
    return text(
        f"UPDATE hosts SET {assignments} FROM json_to_recordset(:rows) AS given({fields}) "  # noqa: S608  (column names of our own table)
        "WHERE hosts.host_id = given.host_id"
    )


def _json_value(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _json_rows(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    keys = ("host_id", *names)
    return json.dumps(
        [{key: _json_value(v) for key, v in zip(keys, row, strict=True)} for row in rows]
    )


class Hosts:
    """The ``hosts`` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def get(self, conn: Connection, host_id: str, *, lock: bool = False) -> HostRow | None:
        """One host, or None; ``lock`` as in `get_many`."""
        return self.get_many(conn, [host_id], lock=lock).get(host_id)

    def get_many(
        self, conn: Connection, host_ids: Iterable[str], *, lock: bool = False
    ) -> dict[str, HostRow]:
        """Hosts by id; with ``lock`` on PostgreSQL their rows stay locked until commit."""
        wanted = sorted(set(host_ids))
        if not wanted:
            return {}
        query = _by_ids(conn.dialect.name, lock=lock)
        return {host.host_id: host for host in _hosts(conn.execute(query, {"ids": wanted}))}

    def all(self, conn: Connection) -> list[HostRow]:
        """Every enrolled host, by id."""
        return _hosts(conn.execute(select(hosts).order_by(hosts.c.host_id)))

    def units(self, conn: Connection) -> dict[str, str | None]:
        """Every enrolled host's unit as it enrolled, by id: two narrow columns."""
        return dict(conn.execute(select(hosts.c.host_id, hosts.c.unit)).all())

    def heard_of(self, conn: Connection, host_ids: Iterable[str]) -> dict[str, Heard]:
        """When each of these hosts was last heard from (those enrolled)."""
        wanted = sorted(set(host_ids))
        found: dict[str, Heard] = {}
        for start in range(0, len(wanted), _IDS_AT_ONCE):
            chunk = wanted[start : start + _IDS_AT_ONCE]
            query = select(*_HEARD).where(hosts.c.host_id.in_(chunk))
            found.update((row.host_id, Heard(*row)) for row in conn.execute(query))
        return found

    def heard_before(
        self, conn: Connection, cutoff: datetime, *, unsilenced: bool = False
    ) -> dict[str, Heard]:
        """Hosts whose latest report was observed before ``cutoff``, or that never reported
        (through the index on when the latest report was observed); with ``unsilenced``, only
        those without a silence noticed (`storage.silences`)."""
        query = select(*_HEARD).where(or_(OBSERVED.is_(None), cutoff > OBSERVED))
        if unsilenced:
            query = query.where(~exists().where(host_silences.c.host_id == hosts.c.host_id))
        return {row.host_id: Heard(*row) for row in conn.execute(query)}

    def enrolled_among(self, conn: Connection, host_ids: Iterable[str]) -> set[str]:
        """Which of these hosts are enrolled."""
        wanted = sorted(set(host_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), _IDS_AT_ONCE):
            chunk = wanted[start : start + _IDS_AT_ONCE]
            query = select(hosts.c.host_id).where(hosts.c.host_id.in_(chunk))
            found.update(host_id for (host_id,) in conn.execute(query))
        return found

    def create(self, conn: Connection, host_id: str, unit: str | None, now: datetime) -> None:
        """Enroll a host that has not reported yet."""
        conn.execute(
            insert(hosts).values(
                host_id=host_id,
                unit=unit,
                enrolled_at=now,
                sections={},
                conditions={},
                dropped_total=0,
                inline={},
            )
        )

    def delete(self, conn: Connection, host_id: str) -> None:
        """Remove a host row (and, by cascade, its tokens).

        Only the write probe's host is deleted. Tokens deleted with their host leave no
        revoked_at for other processes to see (`Identity.follow_revocations`): one they
        cached keeps naming the host until it expires (the ingest writer refuses reports of a
        host that is gone), so a host with tokens must have them revoked, and the caches
        followed, before it is deleted."""
        conn.execute(delete(hosts).where(hosts.c.host_id == host_id))

    def set_reenroll(self, conn: Connection, host_id: str, until: datetime | None) -> bool:
        """Let the host enroll again until then (None: no more); False if there is no host."""
        done = conn.execute(
            update(hosts).where(hosts.c.host_id == host_id).values(reenroll_until=until)
        )
        return bool(done.rowcount)

    def update(self, conn: Connection, changes: Iterable[HostChange]) -> None:
        """Write what changed: one statement per set of columns changed, whatever the hosts.

        On PostgreSQL the statement takes the rows as one JSON document, so a batch's hosts
        are one statement to send, parse and plan, not one per host as an executemany would be.
        """
        by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for change in changes:
            columns = change.columns()
            if columns:
                by_columns.setdefault(tuple(columns), []).append(
                    (change.host_id, *columns.values())
                )
        postgresql = conn.dialect.name == "postgresql"
        for names, rows in by_columns.items():
            if postgresql:
                conn.execute(
                    _update_from_json(names, conn.dialect), {"rows": _json_rows(names, rows)}
                )
            else:
                conn.execute(
                    _update_statement(names),
                    [
                        {
                            "b_host_id": row[0],
                            **{f"b_{n}": v for n, v in zip(names, row[1:], strict=True)},
                        }
                        for row in rows
                    ],
                )

    def evaluated_against(
        self, conn: Connection, after: str = "", limit: int = 10_000
    ) -> list[tuple[str, str | None]]:
        """(host, what it was last evaluated against) for the hosts that reported, in id order
        from after ``after``: a page of a fleet-wide pass reading two narrow columns."""
        query = (
            select(hosts.c.host_id, hosts.c.baseline_digest)
            .where(hosts.c.host_id > after, hosts.c.last_collected_at.is_not(None))
            .order_by(hosts.c.host_id)
            .limit(limit)
        )
        return [(host_id, digest) for host_id, digest in conn.execute(query)]

    def set_evaluated_against(self, conn: Connection, digests: Mapping[str, str]) -> None:
        """Record what these hosts were just evaluated against, in one statement."""
        if not digests:
            return
        if conn.dialect.name == "postgresql":
            given = as_arrays(hosts, list(digests.items()), ("host_id", "baseline_digest"))
            conn.execute(
                update(hosts)
                .where(hosts.c.host_id == given.c.host_id)
                .values(baseline_digest=given.c.baseline_digest)
            )
        else:
            conn.execute(
                update(hosts)
                .where(hosts.c.host_id == bindparam("b_host_id"))
                .values(baseline_digest=bindparam("b_digest")),
                [{"b_host_id": h, "b_digest": d} for h, d in digests.items()],
            )

    def held_contents(self, conn: Connection) -> set[str]:
        """The hash of every section content some host holds as its latest."""
        return {
            state.hash
            for (sections,) in conn.execute(select(hosts.c.sections))
            for state in _sections_from_json(sections).values()
            if state.hash
        }
