"""What the read API answers: hosts with their status, a host's latest state, findings.

A host's status is worked out when asked, from its latest report and its baseline:
``never_reported`` (listed in the policy or enrolled, but no report yet), ``stale`` (the
latest report is older than ``max_report_age``), ``noncompliant`` (open findings) or
``compliant``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.hosts import HostRow
    from fleetwatch.collector.storage.reports import ReportRow

Status = Literal["compliant", "noncompliant", "stale", "never_reported"]
STATUSES: tuple[Status, ...] = ("compliant", "noncompliant", "stale", "never_reported")


class HostSummary(BaseModel):
    host_id: str
    unit: str | None
    groups: list[str]
    status: Status
    last_report_at: datetime | None
    agent_version: str | None
    open_findings: int
    open_by_severity: dict[str, int]
    in_policy: bool
    enrolled: bool


class FindingView(BaseModel):
    id: int
    host_id: str
    rule: str
    key: str
    severity: str
    detail: str
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    open: bool


class SectionView(BaseModel):
    hash: str | None = None
    error: str | None = None
    missing: str | None = None
    data: Any = None


class HostDetail(HostSummary):
    enrolled_at: datetime | None
    last_sequence: int | None
    dropped_reports: int
    spool_error: str | None
    sections: dict[str, SectionView]
    findings: list[FindingView]


class ReportView(BaseModel):
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


def status_of(
    host: HostRow | None, open_count: int, max_report_age: float, now: datetime
) -> Status:
    if host is None or host.observed_at is None:
        return "never_reported"
    if now - host.observed_at > timedelta(seconds=max_report_age):
        return "stale"
    return "noncompliant" if open_count else "compliant"


def host_summary(
    host_id: str,
    host: HostRow | None,
    counts: dict[str, int],
    policy: Policy,
    now: datetime,
) -> HostSummary:
    resolved = policy.for_host(host_id)
    open_count = sum(counts.values())
    return HostSummary(
        host_id=host_id,
        unit=resolved.unit or (host.unit if host else None),
        groups=list(resolved.groups),
        status=status_of(host, open_count, resolved.baseline.max_report_age, now),
        last_report_at=host.observed_at if host else None,
        agent_version=host.agent_version if host else None,
        open_findings=open_count,
        open_by_severity=counts,
        in_policy=resolved.listed,
        enrolled=host is not None,
    )


def finding_view(row: FindingRow) -> FindingView:
    return FindingView(
        id=row.id,
        host_id=row.host_id,
        rule=row.rule,
        key=row.key,
        severity=row.severity,
        detail=row.detail,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        resolved_at=row.resolved_at,
        open=row.resolved_at is None,
    )


def report_view(row: ReportRow) -> ReportView:
    return ReportView(
        instance_id=row.instance_id,
        sequence=row.sequence,
        collected_at=row.collected_at,
        received_at=row.received_at,
        agent_version=row.agent_version,
        sections=row.sections,
        errors=row.errors,
        missing=row.missing,
        dropped=row.dropped,
        spool_error=row.spool_error,
    )
