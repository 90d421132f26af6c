"""Rules: from a host's baseline and its latest facts, the findings that hold now.

Each rule reads some sections of the latest report. When one of them is unknown (the agent
failed to collect it, or never sent it) the rule is *undetermined*: its open findings stay as
they are, neither confirmed nor resolved, so a broken collector never clears a real problem.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from fleetwatch import debversion
from fleetwatch.collector.compliance.policy import name_matches

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fleetwatch.collector.compliance.policy import Baseline
    from fleetwatch.schema import (
        ChecksData,
        Listener,
        PackagesData,
        PortsData,
        ResourcesData,
        ServicesData,
        SystemData,
        UpdatesData,
    )

ACTIVE_STATES = frozenset({"active", "activating", "reloading"})
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime"})


@dataclass(frozen=True)
class Finding:
    rule: str
    key: str
    severity: str
    detail: str


class Facts(Protocol):
    """What the rules know of a host."""

    now: datetime

    def section(self, name: str) -> Any:
        """The section's data, or None when it is unknown."""
        ...

    def section_hash(self, name: str) -> str | None:
        """The content hash of the section's data, when known."""
        ...

    def errors(self) -> Mapping[str, str]:
        """Sections the agent could not collect in the latest report, with why."""
        ...

    def since(self, kind: str, key: str) -> datetime:
        """When a condition (a pending security update, a wanted reboot) was first seen."""
        ...


@dataclass
class Evaluation:
    findings: list[Finding] = field(default_factory=list)
    undetermined: set[str] = field(default_factory=set)


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _who(listener: Listener) -> str:
    if listener.process is None:
        return "process unknown"
    parts = [listener.process]
    if listener.pid is not None:
        parts.append(f"pid {listener.pid}")
    if listener.user:
        parts.append(f"user {listener.user}")
    return " ".join(parts)


def allowed_ports(baseline: Baseline, ports: PortsData) -> list[Finding]:
    if baseline.allowed_ports is None:
        return []
    ranges = baseline.port_ranges
    offending: dict[tuple[str, int], list[Listener]] = defaultdict(list)
    for listener in ports.listeners:
        if baseline.ignore_loopback and _is_loopback(listener.address):
            continue
        if any(r.matches(listener.protocol, listener.port) for r in ranges):
            continue
        offending[(listener.protocol, listener.port)].append(listener)
    findings = []
    allowed = ", ".join(baseline.allowed_ports) or "none"
    for (protocol, port), listeners in sorted(offending.items()):
        addresses = ", ".join(sorted({x.address for x in listeners}))
        who = "; ".join(sorted({_who(x) for x in listeners}))
        findings.append(
            Finding(
                "allowed_ports",
                f"{protocol}/{port}",
                baseline.severity_of("allowed_ports"),
                f"{protocol}/{port} is listening on {addresses} ({who}); allowed: {allowed}",
            )
        )
    return findings


def _units_by_name(services: ServicesData) -> dict[str, Any]:
    units: dict[str, Any] = {}
    for unit in services.units:
        units[unit.name] = unit
        units.setdefault(unit.name.removesuffix(".service"), unit)
    return units


def required_services(baseline: Baseline, services: ServicesData) -> list[Finding]:
    severity = baseline.severity_of("required_services")
    if not baseline.required_services:
        return []
    if not services.available:
        return [
            Finding(
                "required_services",
                name,
                severity,
                f"{name} cannot be verified: {services.reason or 'no service manager'}",
            )
            for name in baseline.required_services
        ]
    units = _units_by_name(services)
    findings = []
    for name in baseline.required_services:
        unit = units.get(name)
        if unit is None:
            findings.append(
                Finding(
                    "required_services",
                    name,
                    severity,
                    f"{name} is required but not installed",
                )
            )
        elif unit.active != "active":
            findings.append(
                Finding(
                    "required_services",
                    name,
                    severity,
                    f"{unit.name} is required but {unit.active or 'not loaded'}"
                    + (f" ({unit.sub})" if unit.sub and unit.sub != unit.active else ""),
                )
            )
    return findings


def forbidden_services(baseline: Baseline, services: ServicesData) -> list[Finding]:
    severity = baseline.severity_of("forbidden_services")
    findings = []
    for pattern in baseline.forbidden_services:
        for unit in services.units:
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
                    Finding(
                        "forbidden_services",
                        unit.name,
                        severity,
                        f"{unit.name} is forbidden but {', '.join(states)}",
                    )
                )
    return _unique(findings)


def forbidden_packages(baseline: Baseline, packages: PackagesData) -> list[Finding]:
    severity = baseline.severity_of("forbidden_packages")
    findings = [
        Finding(
            "forbidden_packages",
            package.name,
            severity,
            f"{package.name} {package.version} ({package.architecture}) is installed but forbidden",
        )
        for pattern in baseline.forbidden_packages
        for package in packages.rows()
        if name_matches(pattern, package.name)
    ]
    return _unique(findings)


def min_versions(baseline: Baseline, packages: PackagesData) -> list[Finding]:
    if not baseline.min_versions or packages.manager != "dpkg":
        return []
    severity = baseline.severity_of("min_versions")
    findings = []
    for package in packages.rows():
        for pattern, minimum in baseline.min_versions.items():
            if not name_matches(pattern, package.name):
                continue
            try:
                too_old = debversion.compare(package.version, minimum) < 0
            except debversion.InvalidVersionError:
                too_old = True
            if too_old:
                findings.append(
                    Finding(
                        "min_versions",
                        package.name,
                        severity,
                        f"{package.name} {package.version} is older than the required {minimum}",
                    )
                )
    return _unique(findings)


def security_updates(baseline: Baseline, updates: UpdatesData, facts: Facts) -> list[Finding]:
    if baseline.max_pending_security_updates is None:
        return []
    grace = timedelta(days=baseline.security_update_grace_days)
    overdue: dict[str, list[Any]] = defaultdict(list)
    for update in updates.updates:
        if update.security and facts.now - facts.since("security_update", update.name) >= grace:
            overdue[update.name].append(update)
    if len(overdue) <= baseline.max_pending_security_updates:
        return []
    severity = baseline.severity_of("security_updates")
    findings = []
    for name, pending in sorted(overdue.items()):
        first = pending[0]
        age = facts.now - facts.since("security_update", name)
        findings.append(
            Finding(
                "security_updates",
                name,
                severity,
                f"{name} {first.installed_version or '(new)'} -> {first.candidate_version}: "
                f"security update pending for {_days(age)} (allowed: "
                f"{baseline.max_pending_security_updates} past "
                f"{baseline.security_update_grace_days:g} days)",
            )
        )
    return findings


def index_age(baseline: Baseline, updates: UpdatesData, facts: Facts) -> list[Finding]:
    if baseline.max_index_age_days is None:
        return []
    refreshed = updates.index_refreshed_at
    if refreshed is not None and facts.now - refreshed <= timedelta(
        days=baseline.max_index_age_days
    ):
        return []
    detail = (
        "the package index was never refreshed"
        if refreshed is None
        else f"the package index is {_days(facts.now - refreshed)} old"
    )
    return [
        Finding(
            "index_age",
            "apt",
            baseline.severity_of("index_age"),
            f"{detail} (limit {baseline.max_index_age_days:g} days): pending updates go unseen",
        )
    ]


def reboot_required(baseline: Baseline, system: SystemData, facts: Facts) -> list[Finding]:
    if baseline.reboot_grace_days is None:
        return []
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
    since = facts.since("reboot_required", "")
    if system.reboot_required_since is not None:
        since = min(since, system.reboot_required_since)
    waited = facts.now - since
    if waited < timedelta(days=baseline.reboot_grace_days):
        return []
    return [
        Finding(
            "reboot_required",
            "reboot",
            baseline.severity_of("reboot_required"),
            f"waiting for a reboot for {_days(waited)} (grace {baseline.reboot_grace_days:g} "
            f"days): {'; '.join(reasons)}",
        )
    ]


def disk_usage(baseline: Baseline, resources: ResourcesData) -> list[Finding]:
    limit = baseline.max_disk_percent
    if limit is None:
        return []
    return [
        Finding(
            "disk_usage",
            mount.mountpoint,
            baseline.severity_of("disk_usage"),
            f"{mount.mountpoint} ({mount.device}) is {mount.percent:.1f}% full (limit {limit:g}%)",
        )
        for mount in resources.mounts
        if mount.percent > limit
    ]


def failing_checks(baseline: Baseline, checks: ChecksData) -> list[Finding]:
    if not baseline.check_failures:
        return []
    return _unique(
        [
            Finding(
                "failing_checks",
                result.name,
                baseline.severity_of("failing_checks"),
                f"{result.kind} check {result.name} ({result.target}) fails: "
                f"{result.reason or 'failed'}",
            )
            for result in checks.results
            if not result.ok
        ]
    )


def collection_errors(baseline: Baseline, errors: Mapping[str, str]) -> list[Finding]:
    if not baseline.collection_errors:
        return []
    return [
        Finding(
            "collection_errors",
            section,
            baseline.severity_of("collection_errors"),
            f"the agent could not collect {section}: {error}",
        )
        for section, error in sorted(errors.items())
    ]


def _unique(findings: list[Finding]) -> list[Finding]:
    """One finding per rule and subject, the first one found."""
    seen: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.rule, finding.key), finding)
    return list(seen.values())


@dataclass(frozen=True)
class Rule:
    id: str
    sections: tuple[str, ...]
    check: Callable[..., list[Finding]]
    uses_time: bool = False


RULES: tuple[Rule, ...] = (
    Rule("allowed_ports", ("ports",), allowed_ports),
    Rule("required_services", ("services",), required_services),
    Rule("forbidden_services", ("services",), forbidden_services),
    Rule("forbidden_packages", ("packages",), forbidden_packages),
    Rule("min_versions", ("packages",), min_versions),
    Rule("security_updates", ("updates",), security_updates, uses_time=True),
    Rule("index_age", ("updates",), index_age, uses_time=True),
    Rule("reboot_required", ("system",), reboot_required, uses_time=True),
    Rule("disk_usage", ("resources",), disk_usage),
    Rule("failing_checks", ("checks",), failing_checks),
)


_RULES_ON: dict[str, tuple[Rule, ...]] = {}


def rules_on(baseline: Baseline, digest: str = "") -> tuple[Rule, ...]:
    """The rules this baseline asks for (an off rule needs no data); kept by digest."""
    rules = _RULES_ON.get(digest) if digest else None
    if rules is None:
        rules = tuple(rule for rule in RULES if _is_on(rule, baseline))
        if digest:
            if len(_RULES_ON) > 10_000:
                _RULES_ON.clear()
            _RULES_ON[digest] = rules
    return rules


def _is_on(rule: Rule, baseline: Baseline) -> bool:
    on: dict[str, bool] = {
        "allowed_ports": baseline.allowed_ports is not None,
        "required_services": bool(baseline.required_services),
        "forbidden_services": bool(baseline.forbidden_services),
        "forbidden_packages": bool(baseline.forbidden_packages),
        "min_versions": bool(baseline.min_versions),
        "security_updates": baseline.max_pending_security_updates is not None,
        "index_age": baseline.max_index_age_days is not None,
        "reboot_required": baseline.reboot_grace_days is not None,
        "disk_usage": baseline.max_disk_percent is not None,
        "failing_checks": baseline.check_failures,
    }
    return on[rule.id]


class Memo:
    """Findings of time-independent rules, by baseline and section hashes.

    A package list of 1,500 entries costs milliseconds to decode and check; most reports
    repeat the last one, so the answer is looked up instead of worked out again.
    """

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._entries: dict[tuple[str, ...], list[Finding]] = {}

    def get(self, key: tuple[str, ...]) -> list[Finding] | None:
        return self._entries.get(key)

    def put(self, key: tuple[str, ...], findings: list[Finding]) -> None:
        if len(self._entries) >= self.size:
            # drop the oldest half; insertion order is age order
            for old in list(self._entries)[: self.size // 2]:
                self._entries.pop(old, None)
        self._entries[key] = findings


def evaluate(
    baseline: Baseline, facts: Facts, memo: Memo | None = None, digest: str = ""
) -> Evaluation:
    """Every finding that holds for this host now, and the rules that cannot be decided.

    ``memo`` with the baseline's ``digest`` lets rules that do not depend on the time reuse
    their answer for section contents they have seen before.
    """
    result = Evaluation()
    for rule in rules_on(baseline, digest):
        key = None
        if memo is not None and not rule.uses_time:
            hashes = [facts.section_hash(name) for name in rule.sections]
            if all(hashes):
                key = (rule.id, digest, *(h for h in hashes if h))
                cached = memo.get(key)
                if cached is not None:
                    result.findings.extend(cached)
                    continue
        inputs = [facts.section(name) for name in rule.sections]
        if any(data is None for data in inputs):
            result.undetermined.add(rule.id)
            continue
        args = [baseline, *inputs, facts] if rule.uses_time else [baseline, *inputs]
        found = rule.check(*args)
        if key is not None and memo is not None:
            memo.put(key, found)
        result.findings.extend(found)
    result.findings.extend(collection_errors(baseline, facts.errors()))
    return result
