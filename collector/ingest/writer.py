"""Taking in reports: verify, store each once, update hosts' latest state, evaluate.

Reports are taken in batches (see `ingest.queue`): everything a batch changes happens in one
transaction, and no report is acknowledged before it committed. An acknowledged report
is stored; a batch that fails leaves nothing behind. A report is named by (host, agent
instance, sequence): the same report sent again is acknowledged again, not stored twice.

Most reports change nothing but load, memory and disk figures. Such a report advances the
host's latest state but gets no row of its own: it extends the row of the report before it
(see `storage.reports`). A report is given a row only when it brings something to keep -- a
section content the host did not hold, a section it could not collect or that went missing,
dropped reports, a spool error, a new agent instance or version, a gap in the sequence, or a
late arrival. The volatile sections themselves (`INLINE_SECTIONS`) are kept on the host row as
their latest content, never as one stored content per report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from fleetwatch.collector.compliance.findings import HostUpdate, age_conditions
from fleetwatch.collector.compliance.reevaluation import evaluated_against
from fleetwatch.collector.refusals import HostMismatch, HostNotEnrolled, Refusal
from fleetwatch.collector.storage.blobs import NewBlob
from fleetwatch.collector.storage.hosts import INLINE_SECTIONS, HostChange, SectionState
from fleetwatch.collector.storage.reports import Extension, NewReport
from fleetwatch.collector.storage.text import storable
from fleetwatch.schema import SECTION_NAMES, SECTION_TYPES, Report, ReportAck

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import BaseModel
    from sqlalchemy import Connection

    from fleetwatch.collector.compliance.findings import Compliance
    from fleetwatch.collector.compliance.policy import Policy, PolicySource
    from fleetwatch.collector.rate_limits import RateLimiter
    from fleetwatch.collector.storage.hosts import HostRow
    from fleetwatch.collector.storage.reports import ReportRow
    from fleetwatch.collector.storage.store import Store

log = structlog.get_logger(__name__)
REEVALUATE_CHUNK = 500  # hosts evaluated again in one transaction
REEVALUATE_PAGE = 10_000  # hosts whose digests are read at once
SQLITE_GAP = 0.15  # seconds a pass leaves the database to other writers between chunks


@dataclass(frozen=True)
class Submission:
    report: Report
    token_host: str
    received_at: datetime


@dataclass
class _Outcome:
    """What became of each section of a report."""

    accepted: dict[str, str] = field(default_factory=dict)  # section -> content hash
    missing: list[str] = field(default_factory=list)  # sent as a hash we do not hold
    errors: dict[str, str] = field(default_factory=dict)  # the agent could not collect it
    fresh: dict[str, BaseModel] = field(default_factory=dict)  # sent in full this time
    inline: dict[str, str] = field(default_factory=dict)  # INLINE_SECTIONS sent, as JSON


@dataclass
class _Batch:
    """What one batch will write, gathered before a statement is sent."""

    contents: dict[str, NewBlob] = field(default_factory=dict)  # by hash
    reports: list[NewReport] = field(default_factory=list)
    extensions: list[Extension] = field(default_factory=list)
    advanced: dict[str, HostUpdate] = field(default_factory=dict)
    released: dict[str, datetime] = field(default_factory=dict)  # hash -> when left behind


def _ack(row: ReportRow, status: str) -> ReportAck:
    return ReportAck.model_validate(
        {
            "status": status,
            "sequence": row.sequence,
            "sections": row.sections,
            "missing": row.missing,
        }
    )


_NEVER_SENT = SectionState()


def inline_facts(host: HostRow) -> dict[str, BaseModel]:
    """The host's inline sections, decoded for the rules (one that no longer parses: left out)."""
    facts: dict[str, BaseModel] = {}
    for name, payload in host.inline.items():
        state = host.sections.get(name)
        if state is None or state.current is None:
            continue
        try:
            facts[name] = SECTION_TYPES[name].model_validate_json(payload)  # type: ignore[index]
        except (KeyError, ValidationError):
            continue
    return facts


def _held(host: HostRow, section: str) -> str | None:
    """The hash of the content the host holds for a section, current or not."""
    state = host.sections.get(section)
    return None if state is None else state.hash


def _spool_error(report: Report) -> str | None:
    error = report.delivery.spool_error
    return storable(error) if error else None


def _full_sections(report: Report) -> dict[str, tuple[str, bytes, BaseModel]]:
    """Sections sent in full: our own hash of each (what an agent claims is never trusted)."""
    full: dict[str, tuple[str, bytes, BaseModel]] = {}
    for name in SECTION_NAMES:
        section = getattr(report.sections, name)
        if section is not None and section.data is not None:
            payload = section.data.model_dump_json().encode()
            full[name] = (hashlib.sha256(payload).hexdigest(), payload, section.data)
    return full


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off for a block that makes many objects.

    A chunk of a pass makes some hundred thousand short-lived objects (host rows, findings,
    decoded sections), nearly all freed by their reference counts; left on, the collector
    would run a collection every 700 of them, and the full ones walk every object the
    process holds (a large fleet's policy is millions). Paused, the block costs about one.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Ingestor:
    def __init__(
        self,
        store: Store,
        policy: PolicySource,
        compliance: Compliance,
        host_limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.compliance = compliance
        # hosts' report rate, shared through their rows (see `rate_limits`); None: not kept
        self.host_limiter = host_limiter

    def ingest(self, report: Report, token_host: str, now: datetime | None = None) -> ReportAck:
        """Store one report from the host its token belongs to, and acknowledge it."""
        (result,) = self.ingest_batch([Submission(report, token_host, now or datetime.now(UTC))])
        if isinstance(result, Refusal):
            raise result
        return result

    def ingest_batch(self, submissions: list[Submission]) -> list[ReportAck | Refusal]:
        """Store a batch of reports in one transaction; one answer per report, in order."""
        results: list[ReportAck | Refusal | None] = [None] * len(submissions)
        for i, item in enumerate(submissions):
            if item.report.host_id != item.token_host:
                results[i] = HostMismatch(item.token_host, item.report.host_id)
        todo = [i for i, result in enumerate(results) if result is None]
        if not todo:
            return results  # type: ignore[return-value]
        full = {i: _full_sections(submissions[i].report) for i in todo}
        batch = _Batch()
        with self.store.write() as conn:
            hosts = self.store.hosts.get_many(
                conn, {submissions[i].report.host_id for i in todo}, lock=True
            )
            before = dict(hosts)
            known = self.store.blobs.existing(
                conn, {h for sections in full.values() for h, _, _ in sections.values()}
            )
            in_batch: dict[tuple[str, str, int], ReportAck] = {}
            for i in todo:
                results[i] = self._take(
                    conn, submissions[i], full[i], hosts, known, batch, in_batch
                )
            self._take_report_tokens([submissions[i].report.host_id for i in todo], hosts)
            now = datetime.now(UTC)
            self.store.blobs.add(conn, list(batch.contents.values()), now)
            self.store.reports.add(conn, batch.reports)
            self.store.reports.extend(conn, batch.extensions)
            # the hosts advanced, and those whose reports only took a token
            self.store.hosts.update(conn, [HostChange(before[h], hosts[h]) for h in hosts])
            # a content some report left behind stays held if a host of the batch holds it
            # (a later report went back to it, or another host has it)
            current = {
                state.hash
                for h in batch.advanced
                for state in hosts[h].sections.values()
                if state.hash
            }
            self.store.blobs.release(
                conn, {h: at for h, at in batch.released.items() if h not in current}
            )
            self.compliance.apply(conn, list(batch.advanced.values()))
        for update in batch.advanced.values():
            dropped = hosts[update.host_id].dropped_total
            if dropped:
                log.debug("host has dropped reports", host_id=update.host_id, dropped=dropped)
        return results  # type: ignore[return-value]

    def _take_report_tokens(self, host_ids: list[str], hosts: dict[str, HostRow]) -> None:
        """Each report let in takes a token of its host's report bucket, kept on the host's
        row: locked for this batch already, so no other process takes one meanwhile."""
        if self.host_limiter is None:
            return
        for host_id, count in Counter(host_ids).items():
            host = hosts.get(host_id)
            if host is not None:
                bucket = self.host_limiter.take(host_id, host.report_bucket, count)
                hosts[host_id] = host.with_report_bucket(bucket)

    def _take(  # noqa: C901, PLR0912  (one branch per form a section can take)
        self,
        conn: Connection,
        item: Submission,
        full: dict[str, tuple[str, bytes, BaseModel]],
        hosts: dict[str, HostRow],
        known: set[str],
        batch: _Batch,
        in_batch: dict[tuple[str, str, int], ReportAck],
    ) -> ReportAck | Refusal:
        report = item.report
        host = hosts.get(report.host_id)
        if host is None:
            return HostNotEnrolled(claimed_host=report.host_id, token_host=item.token_host)
        name = (report.host_id, report.instance_id, report.sequence)
        if name in in_batch:
            return in_batch[name].model_copy(update={"status": "duplicate"})
        duplicate = self._duplicate(conn, host, report)
        if duplicate is not None:
            return duplicate
        outcome = _Outcome()
        for section_name in SECTION_NAMES:
            section = getattr(report.sections, section_name)
            if section is None:
                continue
            if section.error is not None:
                outcome.errors[section_name] = storable(section.error)
            elif section_name in full:
                content_hash, payload, data = full[section_name]
                if section_name in INLINE_SECTIONS:
                    outcome.inline[section_name] = payload.decode()
                elif content_hash not in known:
                    batch.contents[content_hash] = NewBlob(content_hash, section_name, payload)
                outcome.accepted[section_name] = content_hash
                outcome.fresh[section_name] = data
            elif section.hash is not None and section.hash == _held(host, section_name):
                outcome.accepted[section_name] = section.hash
            else:
                outcome.missing.append(section_name)
        newest = self._is_newest(host, report)
        if self._worth_a_row(host, report, outcome, newest=newest):
            batch.reports.append(
                NewReport(
                    host_id=report.host_id,
                    instance_id=report.instance_id,
                    sequence=report.sequence,
                    collected_at=report.collected_at,
                    received_at=item.received_at,
                    agent_version=storable(report.agent_version),
                    sections=outcome.accepted,
                    errors=outcome.errors,
                    missing=outcome.missing,
                    dropped=report.delivery.dropped_reports,
                    spool_error=_spool_error(report),
                )
            )
        else:
            self._extend(report, item.received_at, batch)
        if newest:
            hosts[host.host_id] = self._advance(host, item, outcome, batch)
        ack = ReportAck.model_validate(
            {
                "status": "stored",
                "sequence": report.sequence,
                "sections": outcome.accepted,
                "missing": outcome.missing,
            }
        )
        in_batch[name] = ack
        return ack

    def _duplicate(self, conn: Connection, host: HostRow, report: Report) -> ReportAck | None:
        """The answer to a report that arrived before, or None for one that is new."""
        if host.instance_id == report.instance_id and report.sequence > (host.last_sequence or 0):
            return None  # newer than any that came: no look-up needed
        existing = self.store.reports.find(
            conn, report.host_id, report.instance_id, report.sequence
        )
        if existing is None:
            return None
        return _ack(existing, "duplicate").model_copy(update={"sequence": report.sequence})

    @staticmethod
    def _extend(report: Report, received_at: datetime, batch: _Batch) -> None:
        """Let the row before this report stand for it (in this batch, or stored)."""
        for index in range(len(batch.reports) - 1, -1, -1):
            pending = batch.reports[index]
            if (pending.host_id, pending.instance_id) == (report.host_id, report.instance_id) and (
                pending.through or pending.sequence
            ) == report.sequence - 1:
                batch.reports[index] = dataclasses.replace(
                    pending, through=report.sequence, last_received_at=received_at
                )
                return
        batch.extensions.append(
            Extension(report.host_id, report.instance_id, report.sequence, received_at)
        )

    @staticmethod
    def _worth_a_row(host: HostRow, report: Report, outcome: _Outcome, *, newest: bool) -> bool:
        """Whether a report brings anything to keep beyond being counted (see the module)."""
        return bool(
            not newest
            or host.instance_id != report.instance_id
            or host.last_sequence is None
            or report.sequence != host.last_sequence + 1
            or host.agent_version != storable(report.agent_version)
            or outcome.errors
            or outcome.missing
            or report.delivery.dropped_reports
            or report.delivery.spool_error
            or any(
                name not in INLINE_SECTIONS and content_hash != _held(host, name)
                for name, content_hash in outcome.accepted.items()
            )
            or any(
                (state.error or state.missing) and name in outcome.accepted
                for name, state in host.sections.items()
            )
        )

    @staticmethod
    def _is_newest(host: HostRow, report: Report) -> bool:
        """Whether this report is newer than the host's latest (it may be a late resend)."""
        if host.instance_id != report.instance_id or host.last_sequence is None:
            return True
        return report.sequence > host.last_sequence

    def _advance(
        self, host: HostRow, item: Submission, outcome: _Outcome, batch: _Batch
    ) -> HostRow:
        """The host with this report as its latest state, queued for evaluation."""
        report = item.report
        sections = dict(host.sections)
        for name, content_hash in outcome.accepted.items():
            old = _held(host, name)
            if old and old != content_hash:
                batch.released[old] = item.received_at
            sections[name] = SectionState(content_hash)
        for name, error in outcome.errors.items():
            sections[name] = sections.get(name, _NEVER_SENT).failed(error)
        for name in outcome.missing:
            sections[name] = sections.get(name, _NEVER_SENT).gone_missing()
        inline = {name: p for name, p in host.inline.items() if name in sections}
        inline.update(outcome.inline)
        advanced = dataclasses.replace(
            host,
            inline=inline,
            instance_id=report.instance_id,
            last_sequence=report.sequence,
            last_collected_at=report.collected_at,
            last_received_at=item.received_at,
            agent_version=storable(report.agent_version),
            sections=sections,
            dropped_total=host.dropped_total + report.delivery.dropped_reports,
            spool_error=_spool_error(report),
        )
        observed_at = min(report.collected_at, item.received_at)
        if outcome.fresh:
            advanced = dataclasses.replace(
                advanced, conditions=age_conditions(host.conditions, outcome.fresh, observed_at)
            )
        host_policy = self.policy.current.for_host(host.host_id)
        advanced = dataclasses.replace(
            advanced, baseline_digest=evaluated_against(host_policy, self.generation)
        )
        earlier = batch.advanced.get(host.host_id)
        batch.advanced[host.host_id] = HostUpdate(
            host.host_id,
            host_policy,
            sections,
            advanced.conditions,
            observed_at,
            # inline sections held but not sent again: the rules read them from the row
            {**inline_facts(advanced), **(earlier.fresh if earlier else {}), **outcome.fresh},
            # the last evaluation: the host's latest report, unless this batch advanced it
            earlier.seen_before if earlier else host.observed_at,
        )
        return advanced

    @property
    def generation(self) -> str:
        """The vulnerability data the rules read now ("" without any)."""
        known = self.compliance.vulnerabilities
        return known.index.generation if known is not None else ""

    def reevaluate(self) -> int:
        """Evaluate again every host that reported whose last evaluation was against another
        baseline or other vulnerability data than those in force now (see
        `compliance.reevaluation`); return how many were.

        The fleet is read a page at a time (two narrow columns), and the hosts to evaluate are
        evaluated a chunk at a time, each in a short transaction of its own: reports keep
        being taken in between, and a host a report evaluated meanwhile is left alone.
        """
        policy = self.policy.current
        generation = self.generation
        evaluated = 0
        after = ""
        while True:
            with self.store.read() as conn:
                page = self.store.hosts.evaluated_against(conn, after, REEVALUATE_PAGE)
            if not page:
                return evaluated
            after = page[-1][0]
            with _collection_paused():  # the hosts' policies, resolved: kept by the policy
                stale = [
                    host_id
                    for host_id, digest in page
                    if digest != evaluated_against(policy.for_host(host_id), generation)
                ]
            for start in range(0, len(stale), REEVALUATE_CHUNK):
                with _collection_paused():
                    evaluated += self._reevaluate(
                        stale[start : start + REEVALUATE_CHUNK], policy, generation
                    )
                if self.store.database.dialect == "sqlite":
                    # SQLite's busy handler polls, at most every 100 ms: a pass that took
                    # the lock back at once would starve other processes' writers into
                    # "database is locked"
                    time.sleep(SQLITE_GAP)

    def _reevaluate(self, host_ids: list[str], policy: Policy, generation: str) -> int:
        """Evaluate these hosts again in one transaction; return how many still needed it."""
        now = datetime.now(UTC)
        with self.store.write() as conn:
            updates: list[HostUpdate] = []
            digests: dict[str, str] = {}
            for host in self.store.hosts.get_many(conn, host_ids, lock=True).values():
                host_policy = policy.for_host(host.host_id)
                digest = evaluated_against(host_policy, generation)
                if host.baseline_digest == digest or host.observed_at is None:
                    continue  # a report evaluated it meanwhile
                digests[host.host_id] = digest
                updates.append(
                    HostUpdate(
                        host.host_id,
                        host_policy,
                        host.sections,
                        host.conditions,
                        now,
                        inline_facts(host),
                        # a finding this policy no longer finds was last seen at the latest report
                        host.observed_at,
                    )
                )
            self.compliance.apply(conn, updates)
            self.store.hosts.set_evaluated_against(conn, digests)
        return len(updates)
