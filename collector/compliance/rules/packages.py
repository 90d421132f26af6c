"""Rules on installed packages: none forbidden, none older than the policy allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, Field

from fleetwatch import debversion
from fleetwatch.collector.compliance.rules.patterns import NamePattern, name_matches
from fleetwatch.collector.compliance.rules.registry import rule, unique

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput


MinVersion = Annotated[str, Field(max_length=255), AfterValidator(debversion.validate)]
"""A version as ``dpkg --validate-version`` accepts it."""


class PackagesSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    forbidden_packages: list[NamePattern] = Field(
        default=[],
        description="Packages that must not be installed (shell-style patterns).",
    )
    min_versions: dict[NamePattern, MinVersion] = Field(
        default={}, description="Package -> lowest acceptable version, in dpkg order."
    )


@rule(
    "forbidden_packages",
    severity="high",
    sections=("packages",),
    on=lambda baseline: bool(baseline.forbidden_packages),
)
def forbidden_packages(host: RuleInput) -> list[Finding]:
    """A finding per installed package matching a forbidden pattern."""
    return unique(
        host.finding(
            package.name,
            f"{package.name} {package.version} ({package.architecture}) is installed but forbidden",
        )
        for pattern in host.baseline.forbidden_packages
        for package in host.packages.rows()
        if name_matches(pattern, package.name)
    )


@rule(
    "min_versions",
    severity="high",
    sections=("packages",),
    on=lambda baseline: bool(baseline.min_versions),
)
def min_versions(host: RuleInput) -> list[Finding]:
    """A finding per installed package older, in dpkg order, than its lowest version."""
    packages = host.packages
    if packages.manager != "dpkg":
        return []  # versions compare in dpkg's order only
    findings = []
    for package in packages.rows():
        for pattern, minimum in host.baseline.min_versions.items():
            if not name_matches(pattern, package.name):
                continue
            try:
                too_old = debversion.compare(package.version, minimum) < 0
            except debversion.InvalidVersionError:
                too_old = True
            if too_old:
                findings.append(
                    host.finding(
                        package.name,
                        f"{package.name} {package.version} is older than the required {minimum}",
                    )
                )
    return unique(findings)
