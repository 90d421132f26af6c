"""Taking in a report: verify it, store it once, update the host's latest state, evaluate.

Everything a report changes happens in one transaction, and the acknowledgement is sent only
after it committed: an acknowledged report is stored, and a report that fails half way leaves
nothing behind. A report is named by (host, agent instance, sequence); the same report sent
again is acknowledged again and not stored twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import BaseModel

from agent.schema import SECTION_NAMES, Report, ReportAck
from collector.compliance import MISSING_BASE
from collector.store import storable

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from collector.compliance import Compliance
    from collector.policy import PolicySource
    from collector.store import HostRow, ReportRow, Store

log = structlog.get_logger(__name__)


@dataclass
class _Outcome:
    """What became of each section of a report."""

    accepted: dict[str, str] = field(default_factory=dict)  # section -> content hash
    missing: list[str] = field(default_factory=list)  # sent as a hash we do not hold
    errors: dict[str, str] = field(default_factory=dict)  # the agent could not collect it
    fresh: dict[str, BaseModel] = field(default_factory=dict)  # sent in full this time


class ReportRejectedError(Exception):
    """A report the collector will not store; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ack(row: ReportRow, status: str) -> ReportAck:
    return ReportAck.model_validate(
        {
            "status": status,
            "sequence": row.sequence,
            "sections": row.sections,
            "missing": row.missing,
        }
    )


class Ingestor:
    def __init__(self, store: Store, policy: PolicySource, compliance: Compliance) -> None:
        self.store = store
        self.policy = policy
        self.compliance = compliance

    def ingest(self, report: Report, token_host: str, now: datetime | None = None) -> ReportAck:
        """Store a report from the host its token belongs to, and acknowledge it."""
        if report.host_id != token_host:
            msg = (
                f"this token belongs to host {token_host!r}; a host can only report as "
                f"itself, not as {report.host_id!r}"
            )
            raise ReportRejectedError(403, msg)
        received_at = now or datetime.now(UTC)
        with self.store.write() as conn:
            host = self.store.get_host(conn, report.host_id, lock=True)
            if host is None:
                raise ReportRejectedError(401, "host is not enrolled")
            existing = self.store.find_report(
                conn, report.host_id, report.instance_id, report.sequence
            )
            if existing is not None:
                return _ack(existing, "duplicate")
            outcome = self._sections(conn, report, host, received_at)
            self.store.insert_report(
                conn,
                host_id=report.host_id,
                instance_id=report.instance_id,
                sequence=report.sequence,
                collected_at=report.collected_at,
                received_at=received_at,
                agent_version=storable(report.agent_version),
                sections=outcome.accepted,
                errors=outcome.errors,
                missing=outcome.missing,
                dropped=report.delivery.dropped_reports,
            )
            if self._is_newest(host, report):
                self._advance(conn, host, report, received_at, outcome)
        return ReportAck.model_validate(
            {
                "status": "stored",
                "sequence": report.sequence,
                "sections": outcome.accepted,
                "missing": outcome.missing,
            }
        )

    def _sections(self, conn: Connection, report: Report, host: HostRow, now: datetime) -> _Outcome:
        outcome = _Outcome()
        for name in SECTION_NAMES:
            section = getattr(report.sections, name)
            if section is None:
                continue
            if section.error is not None:
                outcome.errors[name] = storable(section.error)
            elif section.data is not None:
                # Our own hash of the content: what an agent claims is never trusted.
                payload = section.data.model_dump_json().encode()
                content_hash = hashlib.sha256(payload).hexdigest()
                self.store.put_blob(conn, content_hash, name, payload, now)
                outcome.accepted[name] = content_hash
                outcome.fresh[name] = section.data
            elif section.hash is not None and section.hash == host.sections.get(name, {}).get(
                "hash"
            ):
                outcome.accepted[name] = section.hash
            else:
                outcome.missing.append(name)
        return outcome

    @staticmethod
    def _is_newest(host: HostRow, report: Report) -> bool:
        """Whether this report is newer than the host's latest (it may be a late resend)."""
        if host.instance_id != report.instance_id or host.last_sequence is None:
            return True
        return report.sequence > host.last_sequence

    def _advance(
        self,
        conn: Connection,
        host: HostRow,
        report: Report,
        received_at: datetime,
        outcome: _Outcome,
    ) -> None:
        """Make this report the host's latest state, and evaluate it."""
        sections = {name: dict(state) for name, state in host.sections.items()}
        for name, content_hash in outcome.accepted.items():
            old = sections.get(name, {}).get("hash")
            if old and old != content_hash:
                self.store.release_blob(conn, old, received_at)
            sections[name] = {"hash": content_hash}
        for name, error in outcome.errors.items():
            sections[name] = {**sections.get(name, {}), "error": error}
        for name in outcome.missing:
            sections[name] = {**sections.get(name, {}), "missing": MISSING_BASE}
        self.store.update_latest(
            conn,
            host.host_id,
            instance_id=report.instance_id,
            last_sequence=report.sequence,
            last_collected_at=report.collected_at,
            last_received_at=received_at,
            agent_version=storable(report.agent_version),
            sections=sections,
            dropped_total=host.dropped_total + report.delivery.dropped_reports,
        )
        self.compliance.apply(
            conn,
            host.host_id,
            self.policy.current.for_host(host.host_id),
            sections,
            min(report.collected_at, received_at),
            outcome.fresh,
        )
        if report.delivery.dropped_reports:
            log.warning(
                "host dropped reports",
                host_id=host.host_id,
                dropped=report.delivery.dropped_reports,
            )

    def reevaluate_all(self) -> int:
        """Apply the policy in force to every host's latest report; return hosts evaluated."""
        policy = self.policy.current
        with self.store.read() as conn:
            host_ids = [h.host_id for h in self.store.all_hosts(conn)]
        count = 0
        for host_id in host_ids:
            with self.store.write() as conn:
                host = self.store.get_host(conn, host_id, lock=True)
                if host is None or host.observed_at is None:
                    continue
                self.compliance.apply(
                    conn,
                    host_id,
                    policy.for_host(host_id),
                    host.sections,
                    datetime.now(UTC),
                )
                count += 1
        return count
