"""Rules on the running system: a wanted reboot happens within its grace period."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import days, rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput


class SystemSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    reboot_grace_days: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Days a host may wait for a reboot (reboot-required, or an older running "
        "kernel than installed).",
    )


@rule(
    "reboot_required",
    severity="medium",
    sections=("system",),
    on=lambda baseline: baseline.reboot_grace_days is not None,
    uses_time=True,
)
def reboot_required(host: RuleInput) -> list[Finding]:
    """A finding when the host has wanted a reboot for longer than its grace period."""
    grace = host.baseline.reboot_grace_days
    assert grace is not None  # the rule is on only when it is set
    system = host.system
    reasons = []
    if system.reboot_required:
        packages = ", ".join(system.reboot_required_packages[:10])
        reasons.append("reboot-required" + (f" by {packages}" if packages else ""))
    if system.kernel_outdated:
        reasons.append(
            f"running kernel {system.kernel} is older than installed "
            f"{system.kernel_latest_installed}"
        )
    if not reasons:
        return []
    since = host.since("reboot_required", "")
    if system.reboot_required_since is not None:
        since = min(since, system.reboot_required_since)
    waited = host.now - since
    if waited < timedelta(days=grace):
        return []
    return [
        host.finding(
            "reboot",
            f"waiting for a reboot for {days(waited)} (grace {grace:g} days): {'; '.join(reasons)}",
        )
    ]
