"""What the read API answers: hosts with their status, a host's latest state, findings.

A host's status is worked out when asked, from its latest report and its baseline:
``never_reported`` (listed in the policy or enrolled, but no report yet), ``stale`` (the
latest report is older than ``max_report_age``), ``noncompliant`` (open findings) or
``compliant``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.storage.hosts import HostRow

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
    # built from a FindingRow (FindingView.model_validate(row)), whose `open` property it reads
    model_config = ConfigDict(from_attributes=True)

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
    # built from a ReportRow: ReportView.model_validate(row)
    model_config = ConfigDict(from_attributes=True)

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
