"""Rules on pending updates: security updates applied in time, a package index kept fresh."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
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
        description="Days a security update may be pending before it counts: since its fix "
        "was published where the vulnerability data says, else since first seen.",
    )
    max_index_age_days: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Oldest acceptable package index: with an old index, pending updates go "
        "unseen.",
    )


@rule(
    "security_updates",
    severity="high",
    sections=("updates", "packages"),
    on=lambda baseline: baseline.max_pending_security_updates is not None,
    uses_time=True,
    reads_vulnerabilities=True,
)
def security_updates(host: RuleInput) -> list[Finding]:
    """A finding per source package with security updates past their grace period, when more
    sources have them than allowed.

    The binaries of one source (openssl, libssl3, libssl-dev) are fixed by one update, so
    they are one finding. The grace period counts from when the update was first seen, or
    from when the fix became available where the vulnerability data says (its advisory's
    date; a fix older than the data's first import counts as published long ago), so a
    collector that starts today does not hide fixes published last year.
    """
    baseline = host.baseline
    allowed = baseline.max_pending_security_updates
    assert allowed is not None  # the rule is on only when it is set
    grace = timedelta(days=baseline.security_update_grace_days)
    sources = {package.name: package.source for package in host.packages.rows()}
    published = _fix_dates(host)
    pending: dict[str, list[PendingUpdate]] = defaultdict(list)
    for update in host.updates.updates:
        if update.installed_version is None:
            continue  # a new install (agents before new_installs sent them here): no fix pending
        if update.security:
            pending[sources.get(update.name, update.name)].append(update)
    overdue: dict[str, tuple[list[PendingUpdate], datetime]] = {}
    for source, updates in pending.items():
        since = min(host.since("security_update", u.name) for u in updates)
        if source in published:
            since = min(since, published[source])
        if host.now - since >= grace:
            overdue[source] = (updates, since)
    if len(overdue) <= allowed:
        return []
    findings = []
    for source, (updates, since) in sorted(overdue.items()):
        names = sorted({u.name for u in updates})
        first = min(updates, key=lambda u: u.name)
        age = (
            "fix published before the vulnerability data was first imported"
            if since <= _LONG_AGO
            else f"pending for {days(host.now - since)}"
        )
        findings.append(
            host.finding(
                source,
                f"{source}: {len(names)} {'package' if len(names) == 1 else 'packages'} "
                f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}), "
                f"{first.installed_version} -> {first.candidate_version}: "
                f"security update {age}{_why_pending(updates)} (allowed: "
                f"{allowed} past {baseline.security_update_grace_days:g} days)",
            )
        )
    return findings


def _why_pending(updates: list[PendingUpdate]) -> str:
    """What more the agent said: the security version when the candidate is another, and why
    apt will not install an update it holds back."""
    parts = []
    for update in updates:
        if update.security_version and update.security_version != update.candidate_version:
            parts.append(f"{update.name}: security fix {update.security_version}")
        if update.held_back:
            parts.append(f"{update.name} {update.held_back}: {update.reason or 'no reason given'}")
    unique = list(dict.fromkeys(parts))
    return f" ({'; '.join(unique[:10])}{'; ...' if len(unique) > 10 else ''})" if unique else ""


_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def _fix_dates(host: RuleInput) -> dict[str, datetime]:
    """Source package -> the earliest date a fix the host can install was published."""
    dates: dict[str, datetime] = {}
    for match in host.vulnerabilities:
        if match.fixable and match.fixed_version is not None:
            when = match.fix_since or _LONG_AGO
            dates[match.source] = min(dates.get(match.source, when), when)
    return dates


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
