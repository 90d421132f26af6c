"""Rules on resources: no filesystem fuller than the policy allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput


class ResourcesSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    max_disk_percent: Annotated[float, Field(gt=0, le=100)] | None = Field(
        default=None, description="Fullest a mounted filesystem may be, in percent."
    )


@rule(
    "disk_usage",
    severity="medium",
    sections=("resources",),
    on=lambda baseline: baseline.max_disk_percent is not None,
)
def disk_usage(host: RuleInput) -> list[Finding]:
    """A finding per mounted filesystem fuller than the limit."""
    limit = host.baseline.max_disk_percent
    assert limit is not None  # the rule is on only when it is set
    return [
        host.finding(
            mount.mountpoint,
            f"{mount.mountpoint} ({mount.device}) is {mount.percent:.1f}% full (limit {limit:g}%)",
        )
        for mount in host.resources.mounts
        if mount.percent > limit
    ]
