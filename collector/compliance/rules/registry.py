"""The rule registry: each rule declared once, and everything else derived from it.

A rule is a function of one typed input, registered with its id, its default severity, the
report sections it reads, when a baseline turns it on, and whether it depends on the time::

    @rule(
        "disk_usage",
        severity="medium",
        sections=("resources",),
        on=lambda baseline: baseline.max_disk_percent is not None,
    )
    def disk_usage(host: RuleInput) -> list[Finding]:
        return [host.finding(m.mountpoint, "...") for m in host.resources.mounts if ...]

As prometheus client_python's exposition walks its ``CollectorRegistry``, the evaluator walks
this registry (skipping the rules a baseline leaves off, so no rule checks that itself), the
policy accepts severity overrides for exactly the registered ids, and a test holds
docs/policy.md to the registered ids and severities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, get_args

from pydantic import BaseModel

from fleetwatch.schema import (
    SECTION_NAMES,
    ChecksData,
    PackagesData,
    PortsData,
    ResourcesData,
    ServicesData,
    SystemData,
    UpdatesData,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from datetime import datetime, timedelta
    from typing import TypeAlias

    from fleetwatch.collector.compliance.policy import Baseline
    from fleetwatch.collector.vulns.matching import Match
    from fleetwatch.schema import SectionName

    Check: TypeAlias = Callable[["RuleInput"], list["Finding"]]
    """A rule's check: the findings, from what the rule sees of one host."""

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)


class RuleDeclarationError(ValueError):
    """A rule declared wrongly: registered twice, with an unknown severity or section, or
    reading an input its declaration does not name."""


@dataclass(frozen=True)
class Finding:
    """One problem a rule found: the rule, its subject (``key``), severity and detail."""

    rule: str
    key: str
    severity: str
    detail: str


class Facts(Protocol):
    """What the rules know of a host."""

    now: datetime

    def section(self, name: str) -> BaseModel | None:
        """The section's data, or None when it is unknown."""
        ...

    def section_hash(self, name: str) -> str | None:
        """The content hash of the section's data, when known."""
        ...

    def errors(self) -> Mapping[str, str]:
        """Sections the agent could not collect in the latest report, with why."""
        ...

    def since(self, kind: str, key: str) -> datetime:
        """When a condition (a pending security update, a wanted reboot, a vulnerability) was
        first seen."""
        ...

    def vulnerabilities(self) -> Sequence[Match]:
        """The vulnerabilities the host carries, as the vulnerability data says (none without
        data)."""
        ...


@dataclass(frozen=True)
class Rule:
    """One rule as declared.

    ``on`` says whether a baseline turns the rule on; an off rule is never run, and needs no
    data. ``sections`` are the report sections ``check`` reads: when one is unknown the rule is
    undetermined. A rule that reads neither the time (``uses_time``), the report's
    collection errors (``reads_errors``) nor the vulnerability data
    (``reads_vulnerabilities``) depends on its baseline and sections alone, so its findings
    are memoised by their content hashes, and by the keys of the settings class of its own
    module (``PortsSettings`` for a rule of `rules.ports`): such a rule reads no other key of
    the baseline.
    """

    id: str
    severity: Severity
    sections: tuple[SectionName, ...]
    on: Callable[[Baseline], bool]
    check: Check
    uses_time: bool = False
    reads_errors: bool = False
    reads_vulnerabilities: bool = False

    @property
    def memoisable(self) -> bool:
        """Whether the findings follow from the baseline and the sections' contents alone."""
        return not (self.uses_time or self.reads_errors or self.reads_vulnerabilities)


_Section = TypeVar("_Section", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RuleInput:
    """What one rule sees of one host: its baseline, and the inputs the rule declared.

    The sections come decoded and typed (``host.ports``, ``host.packages``...); the time
    (``now``, ``since``) and the collection errors are there for rules that declared them.
    Reading an undeclared input raises ``RuleDeclarationError``: the memo and the undetermined
    state both trust the declaration.
    """

    rule: Rule
    baseline: Baseline
    sections: Mapping[str, BaseModel]
    facts: Facts

    @property
    def severity(self) -> str:
        """The rule's severity for this host: the baseline's override, else the default."""
        return self.baseline.severity.get(self.rule.id, self.rule.severity)

    def finding(self, key: str, detail: str) -> Finding:
        """A finding of this rule about ``key``, at this host's severity for the rule."""
        return Finding(self.rule.id, key, self.severity, detail)

    @property
    def system(self) -> SystemData:
        return self._section("system", SystemData)

    @property
    def packages(self) -> PackagesData:
        return self._section("packages", PackagesData)

    @property
    def updates(self) -> UpdatesData:
        return self._section("updates", UpdatesData)

    @property
    def ports(self) -> PortsData:
        return self._section("ports", PortsData)

    @property
    def services(self) -> ServicesData:
        return self._section("services", ServicesData)

    @property
    def checks(self) -> ChecksData:
        return self._section("checks", ChecksData)

    @property
    def resources(self) -> ResourcesData:
        return self._section("resources", ResourcesData)

    @property
    def now(self) -> datetime:
        """The time of the evaluation (rules declared with ``uses_time``)."""
        self._declared(self.rule.uses_time, "the time without uses_time=True")
        return self.facts.now

    def since(self, kind: str, key: str) -> datetime:
        """When a condition was first seen (rules declared with ``uses_time``)."""
        self._declared(self.rule.uses_time, "the time without uses_time=True")
        return self.facts.since(kind, key)

    @property
    def errors(self) -> Mapping[str, str]:
        """Sections the agent could not collect (rules declared with ``reads_errors``)."""
        self._declared(self.rule.reads_errors, "collection errors without reads_errors=True")
        return self.facts.errors()

    @property
    def vulnerabilities(self) -> Sequence[Match]:
        """The host's vulnerabilities (rules declared with ``reads_vulnerabilities``)."""
        self._declared(
            self.rule.reads_vulnerabilities,
            "vulnerabilities without reads_vulnerabilities=True",
        )
        return self.facts.vulnerabilities()

    def _section(self, name: SectionName, kind: type[_Section]) -> _Section:
        self._declared(name in self.rule.sections, f"{name} without sections=(..., {name!r})")
        data = self.sections[name]
        if not isinstance(data, kind):
            msg = f"section {name} is a {type(data).__name__}, not {kind.__name__}"
            raise TypeError(msg)
        return data

    def _declared(self, declared: bool, what: str) -> None:
        if not declared:
            msg = f"rule {self.rule.id!r} reads {what}"
            raise RuleDeclarationError(msg)


class RuleRegistry:
    """The rules, by id, in the order they were registered (the order findings come out)."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._on: dict[str, tuple[Rule, ...]] = {}

    def register(self, rule: Rule) -> Rule:
        """Add a rule; refuse a second rule with the same id, or an unknown severity or section."""
        if rule.id in self._rules:
            msg = f"rule {rule.id!r} is registered twice"
            raise RuleDeclarationError(msg)
        if rule.severity not in SEVERITIES:
            msg = f"rule {rule.id!r}: severity {rule.severity!r} is not one of {SEVERITIES}"
            raise RuleDeclarationError(msg)
        for name in rule.sections:
            if name not in SECTION_NAMES:
                msg = f"rule {rule.id!r}: {name!r} is not a report section"
                raise RuleDeclarationError(msg)
        self._rules[rule.id] = rule
        self._on.clear()
        return rule

    def unregister(self, rule_id: str) -> None:
        """Remove a rule (tests register their own and take them away again)."""
        del self._rules[rule_id]
        self._on.clear()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def __getitem__(self, rule_id: str) -> Rule:
        return self._rules[rule_id]

    def ids(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def on(self, baseline: Baseline, digest: str = "") -> tuple[Rule, ...]:
        """The rules this baseline turns on; kept by the baseline's digest when given one."""
        rules = self._on.get(digest) if digest else None
        if rules is None:
            rules = tuple(rule for rule in self._rules.values() if rule.on(baseline))
            if digest:
                if len(self._on) > 10_000:
                    self._on.clear()
                self._on[digest] = rules
        return rules


REGISTRY = RuleRegistry()
"""The rules the collector evaluates: every module of this package registers into it."""


def rule(  # noqa: PLR0913  (one keyword per part of a declaration)
    rule_id: str,
    *,
    severity: Severity,
    sections: Iterable[SectionName] = (),
    on: Callable[[Baseline], bool],
    uses_time: bool = False,
    reads_errors: bool = False,
    reads_vulnerabilities: bool = False,
    registry: RuleRegistry = REGISTRY,
) -> Callable[[Check], Check]:
    """Register the decorated function as the check of rule ``rule_id``.

    Args:
        rule_id: the id findings carry and the policy's ``severity`` table names.
        severity: the default severity, which a baseline may override.
        sections: the report sections the check reads.
        on: whether a baseline turns the rule on.
        uses_time: the check reads ``now`` or ``since`` (its findings are never memoised).
        reads_errors: the check reads the report's collection errors.
        reads_vulnerabilities: the check reads the host's vulnerabilities.
        registry: where to register; the collector's ``REGISTRY`` unless a test says otherwise.

    Example::

        @rule("failing_checks", severity="high", sections=("checks",),
              on=lambda baseline: baseline.check_failures)
        def failing_checks(host: RuleInput) -> list[Finding]: ...
    """

    def register(check: Check) -> Check:
        registry.register(
            Rule(
                rule_id,
                severity,
                tuple(sections),
                on,
                check,
                uses_time,
                reads_errors,
                reads_vulnerabilities,
            )
        )
        return check

    return register


def unique(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per rule and subject, the first one found."""
    seen: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.rule, finding.key), finding)
    return list(seen.values())


def days(delta: timedelta) -> str:
    """A duration as details phrase it: ``2.5 days`` under ten days, ``12 days`` past."""
    count = delta.total_seconds() / 86400
    return f"{count:.1f} days" if count < 10 else f"{count:.0f} days"
