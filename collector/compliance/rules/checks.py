"""Rules on active checks: the checks configured for a host pass."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import rule, unique

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput


class ChecksSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    check_failures: bool = Field(default=True, description="A failing active check is a finding.")


@rule(
    "failing_checks",
    severity="high",
    sections=("checks",),
    on=lambda baseline: baseline.check_failures,
)
def failing_checks(host: RuleInput) -> list[Finding]:
    """A finding per active check that fails."""
    return unique(
        host.finding(
            result.name,
            f"{result.kind} check {result.name} ({result.target}) fails: "
            f"{result.reason or 'failed'}",
        )
        for result in host.checks.results
        if not result.ok
    )
