"""Rules on systemd services: required ones run, forbidden ones neither run nor start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.patterns import NamePattern, name_matches
from fleetwatch.collector.compliance.rules.registry import rule, unique

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput
    from fleetwatch.schema import ServicesData, ServiceUnit

ACTIVE_STATES = frozenset({"active", "activating", "reloading"})
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime"})


class ServicesSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    required_services: list[NamePattern] = Field(
        default=[], description="systemd services that must be active."
    )
    forbidden_services: list[NamePattern] = Field(
        default=[],
        description="systemd services that must be neither active nor enabled.",
    )


def _units_by_name(services: ServicesData) -> dict[str, ServiceUnit]:
    units: dict[str, ServiceUnit] = {}
    for unit in services.units:
        units[unit.name] = unit
        units.setdefault(unit.name.removesuffix(".service"), unit)
    return units


@rule(
    "required_services",
    severity="high",
    sections=("services",),
    on=lambda baseline: bool(baseline.required_services),
)
def required_services(host: RuleInput) -> list[Finding]:
    """A finding per required service that is not active, not installed, or unverifiable."""
    services = host.services
    required = host.baseline.required_services
    if not services.available:
        reason = services.reason or "no service manager"
        return [host.finding(name, f"{name} cannot be verified: {reason}") for name in required]
    units = _units_by_name(services)
    findings = []
    for name in required:
        unit = units.get(name)
        if unit is None:
            findings.append(host.finding(name, f"{name} is required but not installed"))
        elif unit.active != "active":
            findings.append(
                host.finding(
                    name,
                    f"{unit.name} is required but {unit.active or 'not loaded'}"
                    + (f" ({unit.sub})" if unit.sub and unit.sub != unit.active else ""),
                )
            )
    return findings


@rule(
    "forbidden_services",
    severity="high",
    sections=("services",),
    on=lambda baseline: bool(baseline.forbidden_services),
)
def forbidden_services(host: RuleInput) -> list[Finding]:
    """A finding per unit matching a forbidden pattern that is active or enabled."""
    findings = []
    for pattern in host.baseline.forbidden_services:
        for unit in host.services.units:
            if not (
                name_matches(pattern, unit.name)
                or name_matches(pattern, unit.name.removesuffix(".service"))
            ):
                continue
            states = []
            if unit.active in ACTIVE_STATES:
                states.append(f"{unit.active} ({unit.sub})")
            if unit.enabled in ENABLED_STATES:
                states.append(unit.enabled)
            if states:
                findings.append(
                    host.finding(unit.name, f"{unit.name} is forbidden but {', '.join(states)}")
                )
    return unique(findings)
