"""Rules on installed packages: none forbidden, none older than the policy allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, Field

from fleetwatch import debversion
from fleetwatch.collector.compliance.rules.patterns import NamePattern, name_matches, patterns
from fleetwatch.collector.compliance.rules.registry import rule, unique
from fleetwatch.schema import Package

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

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
    forbidden = patterns(tuple(host.baseline.forbidden_packages))
    # in the order of the patterns, then of the packages, as a loop per pattern would find them
    found = sorted(
        (first, position, row)
        for position, row in enumerate(host.packages.packages)
        if (first := forbidden.first(row[0])) is not None
    )
    return unique(
        host.finding(
            package.name,
            f"{package.name} {package.version} ({package.architecture}) is installed but forbidden",
        )
        for _, _, row in found
        for package in (Package._make(row),)
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
    named = patterns(tuple(host.baseline.min_versions))
    findings = []
    for row in packages.packages:
        if not named.any(row[0]):
            continue
        package = Package._make(row)
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


def epochless_minimums(
    min_versions_of: Callable[[str], Mapping[str, str]],
    installed: Mapping[str, Mapping[str, Sequence[str]]],
) -> list[str]:
    """Warnings for ``min_versions`` entries without an epoch where the package has one.

    Any version with an epoch sorts above every version without one, so such an entry is met
    by every host whatever its version: almost certainly not what was meant.
    ``min_versions_of`` gives a host's resolved ``min_versions``; ``installed`` the versions
    each host reported, by package name.
    """
    hosts_by_case: dict[tuple[str, str, int], list[str]] = {}
    for host_id, packages in sorted(installed.items()):
        minimums = min_versions_of(host_id)
        for name, versions in packages.items():
            for pattern, minimum in minimums.items():
                if ":" not in minimum and name_matches(pattern, name):
                    _note_epoch(hosts_by_case, host_id, name, minimum, versions)
    warnings = []
    for (name, minimum, epoch), host_ids in sorted(hosts_by_case.items()):
        example = ", ".join(host_ids[:3]) + (", ..." if len(host_ids) > 3 else "")
        warnings.append(
            f"min_versions {name} = {minimum!r} has no epoch, but {name} has epoch {epoch} on "
            f"{len(host_ids)} reporting host{'s' if len(host_ids) != 1 else ''} ({example}): "
            f"every such version meets it; write {f'{epoch}:{minimum}'!r}"
        )
    return warnings


def _note_epoch(
    hosts_by_case: dict[tuple[str, str, int], list[str]],
    host_id: str,
    name: str,
    minimum: str,
    versions: Sequence[str],
) -> None:
    for version in versions:
        try:
            epoch = debversion.parse(version)[0]
        except debversion.InvalidVersionError:
            continue
        if epoch:
            hosts_by_case.setdefault((name, minimum, epoch), []).append(host_id)
            return
