"""Rules on pending updates: security updates applied in time, a package index kept fresh."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import days, rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput
    from fleetwatch.schema import PendingUpdate


class UpdatesSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    max_pending_security_updates: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Most security updates that may be pending past their grace period.",
    )
    security_update_grace_days: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="Days a security update may be pending (since first seen) before it counts.",
    )
    max_index_age_days: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Oldest acceptable package index: with an old index, pending updates go "
        "unseen.",
    )


@rule(
    "security_updates",
    severity="high",
    sections=("updates",),
    on=lambda baseline: baseline.max_pending_security_updates is not None,
    uses_time=True,
)
def security_updates(host: RuleInput) -> list[Finding]:
    """A finding per security update past its grace period, when more are than allowed."""
    baseline = host.baseline
    allowed = baseline.max_pending_security_updates
    assert allowed is not None  # the rule is on only when it is set
    grace = timedelta(days=baseline.security_update_grace_days)
    overdue: dict[str, list[PendingUpdate]] = defaultdict(list)
    for update in host.updates.updates:
        if update.installed_version is None:
            continue  # a new install (agents before new_installs sent them here): no fix pending
        if update.security and host.now - host.since("security_update", update.name) >= grace:
            overdue[update.name].append(update)
    if len(overdue) <= allowed:
        return []
    findings = []
    for name, pending in sorted(overdue.items()):
        first = pending[0]
        age = host.now - host.since("security_update", name)
        findings.append(
            host.finding(
                name,
                f"{name} {first.installed_version} -> {first.candidate_version}: "
                f"security update pending for {days(age)}{_why_pending(first)} (allowed: "
                f"{allowed} past {baseline.security_update_grace_days:g} days)",
            )
        )
    return findings


def _why_pending(update: PendingUpdate) -> str:
    """What more the agent said: the security version when the candidate is another, and why
    apt will not install it when it is held back."""
    parts = []
    if update.security_version and update.security_version != update.candidate_version:
        parts.append(f"security fix {update.security_version}")
    if update.held_back:
        parts.append(f"{update.held_back}: {update.reason or 'no reason given'}")
    return f" ({'; '.join(parts)})" if parts else ""


@rule(
    "index_age",
    severity="medium",
    sections=("updates",),
    on=lambda baseline: baseline.max_index_age_days is not None,
    uses_time=True,
)
def index_age(host: RuleInput) -> list[Finding]:
    """A finding when the package index is older than allowed: old indexes hide updates."""
    limit = host.baseline.max_index_age_days
    assert limit is not None  # the rule is on only when it is set
    refreshed = host.updates.index_refreshed_at
    if refreshed is not None and host.now - refreshed <= timedelta(days=limit):
        return []
    detail = (
        "the package index was never refreshed"
        if refreshed is None
        else f"the package index is {days(host.now - refreshed)} old"
    )
    return [host.finding("apt", f"{detail} (limit {limit:g} days): pending updates go unseen")]
