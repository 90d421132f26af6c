"""The HTTP API's models: what it answers, and the bodies administrators send.

Hosts with their status, a host's latest state, findings, reports, API tokens, the policy in
force. Views of stored records are built from the records (``from_attributes``), so that a
route never copies a row field by field.

A host's status is worked out when asked, from its latest report and its baseline:
``never_reported`` (listed in the policy or enrolled, but no report yet), ``stale`` (the
latest report is older than ``max_report_age``), ``noncompliant`` (open findings) or
``compliant``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.storage.findings import FindingRow
    from fleetwatch.collector.storage.hosts import HostRow, SectionState

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
    # the response (compliance/lifecycle.py): open, acknowledged, resolved, verified
    state: str = "open"
    waived: bool = False
    waiver_id: int | None = None
    due_at: datetime | None = None
    overdue: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str | None = None
    verified_at: datetime | None = None
    reopened: int = 0

    @classmethod
    def of(cls, row: FindingRow, now: datetime) -> FindingView:
        """A finding as it stands at ``now`` (overdue or not)."""
        return cls.model_validate(row).model_copy(update={"overdue": row.is_overdue(now)})


class SectionView(BaseModel):
    # built from a SectionState and the content it holds: SectionView.of(state, data)
    model_config = ConfigDict(from_attributes=True)

    hash: str | None = None
    error: str | None = None
    missing: str | None = None
    data: Any = None

    @classmethod
    def of(cls, state: SectionState, data: Any = None) -> SectionView:
        """A section as its state records it, with its content decoded (None: not asked for
        or not held)."""
        return cls.model_validate(state).model_copy(update={"data": data})


class HostDetail(HostSummary):
    enrolled_at: datetime | None
    last_sequence: int | None
    dropped_reports: int
    spool_error: str | None
    sections: dict[str, SectionView]
    findings: list[FindingView]

    @classmethod
    def of(
        cls,
        summary: HostSummary,
        host: HostRow | None,
        sections: Mapping[str, SectionView],
        findings: Iterable[FindingRow],
    ) -> HostDetail:
        """A host's summary with what its row records (nothing for a host that never
        enrolled), its sections and its open findings."""
        return cls(
            **dict(summary),
            enrolled_at=host.enrolled_at if host else None,
            last_sequence=host.last_sequence if host else None,
            dropped_reports=host.dropped_total if host else 0,
            spool_error=host.spool_error if host else None,
            sections=dict(sections),
            # overdue is reckoned now: the host's state is read now
            findings=[FindingView.of(f, datetime.now(UTC)) for f in findings],
        )


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
    through: int | None = Field(
        default=None,
        description="The reports after this one up to this sequence arrived and brought "
        "nothing new: this entry stands for them too.",
    )
    last_received_at: datetime | None = Field(
        default=None, description="When the last report this entry stands for arrived."
    )


class RotatedToken(BaseModel):
    token: str


class PolicyState(BaseModel):
    source: str
    digest: str
    error: str | None
    hosts: int
    groups: list[str]


class PolicyReload(BaseModel):
    changed: bool
    hosts_evaluated: int
    error: str | None


class ReenrollRequest(BaseModel):
    minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 60


class TokenRequest(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    kind: Literal["admin", "read", "respond", "enroll"]
    unit: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class TokenView(BaseModel):
    # built from an ApiTokenRow: TokenView.model_validate(row)
    model_config = ConfigDict(from_attributes=True)

    id: int | None = Field(description="null for a token the collector reads from its settings")
    name: str
    kind: str
    unit: str | None
    created_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    source: Literal["database", "environment"] = Field(
        default="database",
        description="environment: FLEETWATCH_ADMIN_TOKEN or FLEETWATCH_ENROLL_SECRET (or their "
        "_FILE forms); it cannot be revoked through the API",
    )


class NewToken(BaseModel):
    id: int
    name: str
    kind: str
    unit: str | None
    token: str


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


# -- notifications ------------------------------------------------------------------------


class TargetStatusView(BaseModel):
    """How a notification target is doing: ok, retrying, or failing."""

    target: str
    kind: str
    state: Literal["ok", "retrying", "failing"]
    pending: int
    sent: int
    failed: int
    last_sent_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    oldest_pending_at: datetime | None


class NotificationsStatus(BaseModel):
    """The sender's targets, and the notifications file in force."""

    source: str
    error: str | None  # why a newer notifications file was not loaded
    failing: list[str]
    targets: list[TargetStatusView]


class TargetTest(BaseModel):
    """What sending a test message to a target did."""

    target: str
    ok: bool
    detail: str
