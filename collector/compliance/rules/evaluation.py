"""Evaluation: from a host's baseline and its latest facts, the findings that hold now.

Each rule reads some sections of the latest report. When one of them is unknown (the agent
failed to collect it, or never sent it) the rule is *undetermined*: its open findings stay as
they are, neither confirmed nor resolved, so a broken collector never clears a real problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fleetwatch.collector.compliance.rules.registry import REGISTRY, Finding, RuleInput

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.policy import Baseline
    from fleetwatch.collector.compliance.rules.registry import Facts, Rule, RuleRegistry


@dataclass
class Evaluation:
    """The findings that hold for a host, and the rules that could not be decided."""

    findings: list[Finding] = field(default_factory=list)
    undetermined: set[str] = field(default_factory=set)


class Memo:
    """Findings of memoisable rules, by rule, baseline and section hashes.

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
    baseline: Baseline,
    facts: Facts,
    memo: Memo | None = None,
    digest: str = "",
    *,
    registry: RuleRegistry = REGISTRY,
) -> Evaluation:
    """Every finding that holds for this host now, and the rules that cannot be decided.

    ``memo`` with the baseline's ``digest`` lets rules that depend on their sections alone
    reuse their answer for section contents they have seen before.
    """
    result = Evaluation()
    for rule in registry.on(baseline, digest):
        key = None
        if memo is not None and rule.memoisable:
            hashes = [facts.section_hash(name) for name in rule.sections]
            if all(hashes):
                key = (rule.id, _reads(rule, baseline, digest), *(h for h in hashes if h))
                cached = memo.get(key)
                if cached is not None:
                    result.findings.extend(cached)
                    continue
        sections = {name: facts.section(name) for name in rule.sections}
        known: dict[str, BaseModel] = {n: data for n, data in sections.items() if data is not None}
        if len(known) < len(sections):
            result.undetermined.add(rule.id)
            continue
        found = rule.check(RuleInput(rule, baseline, known, facts))
        if key is not None and memo is not None:
            memo.put(key, found)
        result.findings.extend(found)
    return result


_READS: dict[tuple[str, str], str] = {}


def _reads(rule: Rule, baseline: Baseline, digest: str) -> str:
    """A digest of what a memoisable rule reads of the baseline: the keys of its module's
    settings class, and its severity.

    Hosts whose baselines differ elsewhere (another group's ports, a unit's own disk limit)
    then share the rule's memo, so a policy change that leaves the rule's keys alone does not
    check every package list again. A rule registered without a settings class of its own
    (as tests do) is kept by the whole baseline.
    """
    known = _READS.get((rule.id, digest)) if digest else None
    if known is not None:
        return known
    keys = {
        name
        for cls in type(baseline).__mro__
        if issubclass(cls, BaseModel) and cls.__module__ == rule.check.__module__
        for name in cls.model_fields
    }
    if keys:
        text = baseline.model_dump_json(include=keys) + str(baseline.severity.get(rule.id))
        reads = hashlib.sha256(text.encode()).hexdigest()
    else:
        reads = digest or hashlib.sha256(baseline.model_dump_json().encode()).hexdigest()
    if digest:
        if len(_READS) > 100_000:
            _READS.clear()
        _READS[rule.id, digest] = reads
    return reads
