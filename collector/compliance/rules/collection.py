"""Rules on collection itself: every section the agent could not collect is a finding.

This rule reads no section but the report's collection errors (``reads_errors``), so it is
never undetermined and never memoised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput


class CollectionSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    collection_errors: bool = Field(
        default=True, description="A section the agent could not collect is a finding."
    )


@rule(
    "collection_errors",
    severity="low",
    on=lambda baseline: baseline.collection_errors,
    reads_errors=True,
)
def collection_errors(host: RuleInput) -> list[Finding]:
    """A finding per section the agent could not collect, with why."""
    return [
        host.finding(section, f"the agent could not collect {section}: {error}")
        for section, error in sorted(host.errors.items())
    ]
