"""Rules: what a host must not show, each declared once in the registry.

``registry`` declares rules (``@rule``) and holds them; ``evaluation`` applies the rules a
baseline turns on to a host's facts. One module per report section holds the rules that read
it, as the agent has one collector per section; ``collection`` holds the rule on the report's
own collection errors. Adding a rule is one decorated function in the module of the section
it reads.
"""

from __future__ import annotations

# isort: off
# Importing a module registers its rules; this order is the order findings come out in.
from fleetwatch.collector.compliance.rules import (
    ports,
    services,
    packages,
    updates,
    vulnerabilities,
    system,
    resources,
    checks,
    collection,
)

# isort: on
from fleetwatch.collector.compliance.rules.evaluation import Evaluation, Memo, evaluate
from fleetwatch.collector.compliance.rules.registry import (
    REGISTRY,
    SEVERITIES,
    Facts,
    Finding,
    Rule,
    RuleDeclarationError,
    RuleInput,
    RuleRegistry,
    Severity,
    rule,
)

__all__ = [
    "REGISTRY",
    "SEVERITIES",
    "Evaluation",
    "Facts",
    "Finding",
    "Memo",
    "Rule",
    "RuleDeclarationError",
    "RuleInput",
    "RuleRegistry",
    "Severity",
    "checks",
    "collection",
    "evaluate",
    "packages",
    "ports",
    "resources",
    "rule",
    "services",
    "system",
    "updates",
    "vulnerabilities",
]
