"""The rule registry: rules declared once, and the policy, evaluator and docs derived from it."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from fleetwatch.collector.compliance import rules as rules_package
from fleetwatch.collector.compliance.policy import Baseline, Policy, PolicyError
from fleetwatch.collector.compliance.rules import (
    REGISTRY,
    SEVERITIES,
    Finding,
    Memo,
    Rule,
    RuleDeclarationError,
    RuleInput,
    RuleRegistry,
    evaluate,
    rule,
)
from tests.collector.compliance.fakes import Facts
from tests.helpers import section_data

ROOT = Path(__file__).parents[3]

# The modules of the rules package that declare no rule of their own.
MACHINERY = {"registry", "evaluation", "patterns"}


def _no_findings(host: RuleInput) -> list[Finding]:
    return []


def _declared(rule_id: str, **changes: object) -> Rule:
    fields: dict[str, object] = {
        "severity": "low",
        "sections": ("ports",),
        "on": lambda baseline: True,
        "check": _no_findings,
    }
    fields.update(changes)
    return Rule(rule_id, **fields)  # type: ignore[arg-type]


class TestRegistration:
    def test_a_rule_registered_twice_is_refused(self) -> None:
        """A second rule with an id already taken is refused, naming the id."""
        registry = RuleRegistry()
        registry.register(_declared("one"))
        with pytest.raises(RuleDeclarationError, match="'one' is registered twice"):
            registry.register(_declared("one", severity="high"))
        assert registry["one"].severity == "low"

    def test_a_catalogue_rule_declared_again_is_refused(self) -> None:
        """The collector's own rules cannot be declared a second time either."""
        with pytest.raises(RuleDeclarationError, match="'disk_usage' is registered twice"):
            rule("disk_usage", severity="low", on=lambda baseline: True)(_no_findings)
        assert REGISTRY["disk_usage"].severity == "medium"

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"severity": "urgent"}, "severity 'urgent' is not one of"),
            ({"sections": ("ports", "kernel")}, "'kernel' is not a report section"),
        ],
    )
    def test_unknown_severity_or_section_is_refused(
        self, changes: dict[str, object], message: str
    ) -> None:
        """A rule must name a known severity and only report sections."""
        with pytest.raises(RuleDeclarationError, match=message):
            RuleRegistry().register(_declared("odd", **changes))

    def test_every_rule_has_a_severity(self) -> None:
        """Every registered rule has a known default severity, which a baseline starts from."""
        assert len(REGISTRY) > 0
        for declared in REGISTRY:
            assert declared.severity in SEVERITIES, declared.id
            assert Baseline().severity_of(declared.id) == declared.severity

    def test_every_module_of_the_package_registers_its_rules(self) -> None:
        """A module added to the rules package is imported by it, so its rules are in force."""
        modules = {m.name for m in pkgutil.iter_modules(rules_package.__path__)} - MACHINERY
        declaring = {declared.check.__module__.rsplit(".", 1)[1] for declared in REGISTRY}
        assert declaring == modules


class TestRuleSettings:
    def test_every_rules_module_settings_are_part_of_the_baseline(self) -> None:
        """Each rules module declares its policy keys beside its rules, and the baseline
        is made of them: a module whose settings the baseline forgot fails here."""
        declared = []
        for module in pkgutil.iter_modules(rules_package.__path__):
            loaded = importlib.import_module(f"{rules_package.__name__}.{module.name}")
            declared += [
                value
                for name, value in vars(loaded).items()
                if name.endswith("Settings")
                and isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == loaded.__name__
            ]
        assert declared
        assert set(declared) == {base for base in Baseline.__mro__ if base in declared}
        keys = {key for settings in declared for key in settings.model_fields}
        assert keys == set(Baseline.model_fields) - {"max_report_age", "severity"}

    def test_a_rules_policy_key_is_validated_where_it_is_declared(self) -> None:
        """A bad value for a rule's key is refused naming the key, as any policy key."""
        with pytest.raises(PolicyError, match=r"\[defaults\] max_disk_percent"):
            Policy.from_text("[defaults]\nmax_disk_percent = 120\n")


class TestPolicySchema:
    def test_severity_table_lists_exactly_the_registered_ids(self) -> None:
        """The policy schema's severity keys are the registered rule ids, no more, no fewer."""
        schema = Baseline.model_json_schema()["properties"]["severity"]
        assert schema["propertyNames"]["enum"] == list(REGISTRY.ids())

    def test_every_registered_id_takes_an_override(self) -> None:
        """Each registered rule's severity can be overridden by a baseline."""
        baseline = Baseline(severity=dict.fromkeys(REGISTRY.ids(), "critical"))
        assert {baseline.severity_of(rule_id) for rule_id in REGISTRY.ids()} == {"critical"}

    def test_unknown_rule_id_is_refused_naming_the_key(self) -> None:
        """A misspelt rule id is refused; the error names the table and key, and the rules."""
        with pytest.raises(PolicyError) as excinfo:
            Policy.from_text('[groups.web]\nseverity = { disk_usge = "high" }\n', "policy.toml")
        message = str(excinfo.value)
        assert message.startswith('policy.toml: [groups."web"] severity.disk_usge')
        assert "'disk_usage'" in message
        assert "'collection_errors'" in message


class TestRuleInput:
    def host(self, declared: Rule) -> RuleInput:
        facts = Facts({"ports": {"listeners": []}}, errors={"updates": "apt-get failed"})
        ports = facts.section("ports")
        return RuleInput(declared, Baseline(), {"ports": ports}, facts)

    def test_declared_inputs_are_typed_and_readable(self) -> None:
        """A rule reads its declared sections, the time and collection errors."""
        host = self.host(_declared("reader", uses_time=True, reads_errors=True))
        assert host.ports.listeners == []
        assert host.now is not None
        assert host.errors == {"updates": "apt-get failed"}
        assert host.finding("k", "d") == Finding("reader", "k", "low", "d")

    @pytest.mark.parametrize(
        ("read", "message"),
        [
            (lambda host: host.packages, "reads packages without sections="),
            (lambda host: host.now, "reads the time without uses_time=True"),
            (lambda host: host.since("reboot_required", ""), "without uses_time=True"),
            (lambda host: host.errors, "reads collection errors without reads_errors=True"),
        ],
    )
    def test_reading_an_undeclared_input_is_refused(self, read: object, message: str) -> None:
        """The memo and the undetermined state trust the declaration, so the input holds to it."""
        host = self.host(_declared("reader"))
        with pytest.raises(RuleDeclarationError, match=message):
            read(host)  # type: ignore[operator]


@pytest.fixture
def root_mount_rule() -> Iterator[Rule]:
    """A rule declared as a new module would declare it, taken away after the test."""

    @rule(
        "root_mount",
        severity="medium",
        sections=("resources",),
        on=lambda baseline: baseline.max_disk_percent is not None,
    )
    def root_mount(host: RuleInput) -> list[Finding]:
        return [
            host.finding(m.mountpoint, f"{m.mountpoint} is mounted")
            for m in host.resources.mounts
            if m.mountpoint == "/"
        ]

    yield REGISTRY["root_mount"]
    REGISTRY.unregister("root_mount")


def _resources() -> dict[str, object]:
    data = section_data("resources")
    data["mounts"] = [
        {
            "mountpoint": "/",
            "device": "/dev/vda",
            "fstype": "ext4",
            "total_bytes": 100,
            "used_bytes": 10,
            "percent": 10.0,
        }
    ]
    return data


class TestNewRule:
    def test_is_evaluated_with_its_default_severity(self, root_mount_rule: Rule) -> None:
        """A rule registered anywhere is evaluated, with no other file touched."""
        result = evaluate(Baseline(max_disk_percent=90), Facts({"resources": _resources()}))
        assert result.findings == [Finding("root_mount", "/", "medium", "/ is mounted")]

    def test_is_off_when_its_baseline_says_so(self, root_mount_rule: Rule) -> None:
        """The registry skips a rule its baseline leaves off."""
        assert evaluate(Baseline(), Facts({"resources": _resources()})).findings == []

    def test_is_undetermined_without_its_section(self, root_mount_rule: Rule) -> None:
        """A new rule whose section is unknown is undetermined, like the others."""
        result = evaluate(Baseline(max_disk_percent=90), Facts())
        assert result.undetermined == {"root_mount", "disk_usage", "failing_checks"}

    def test_takes_a_severity_override_from_the_policy(self, root_mount_rule: Rule) -> None:
        """The policy accepts a severity for a rule registered after it was imported."""
        policy = Policy.from_text(
            '[defaults]\nmax_disk_percent = 90\nseverity = { root_mount = "critical" }\n'
        )
        baseline = policy.for_host("web-01").baseline
        (finding,) = evaluate(baseline, Facts({"resources": _resources()})).findings
        assert finding.severity == "critical"
        schema = Baseline.model_json_schema()["properties"]["severity"]
        assert "root_mount" in schema["propertyNames"]["enum"]

    def test_is_memoised_by_its_section_hash(self, root_mount_rule: Rule) -> None:
        """A new time-independent rule reuses its answer for a section seen before."""
        memo, baseline = Memo(), Baseline(max_disk_percent=90)
        evaluate(baseline, Facts({"resources": _resources()}), memo, "digest")
        again = Facts({"resources": _resources()})
        result = evaluate(baseline, again, memo, "digest")
        assert "resources" not in again.loads
        assert Finding("root_mount", "/", "medium", "/ is mounted") in result.findings

    def test_leaves_the_registry_as_it_was(self) -> None:
        """The fixture takes its rule away again."""
        assert "root_mount" not in REGISTRY


def _documented_rules() -> dict[str, tuple[str, str]]:
    """docs/policy.md's rules table: rule id -> (severity, what it reads)."""
    text = (ROOT / "docs" / "policy.md").read_text()
    table = text.split("## Rules", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        match = re.fullmatch(r"`(\w+)` \((\w+)\)", cells[1])
        if match:
            documented[match.group(1)] = (match.group(2), cells[2])
    return documented


class TestDocs:
    def test_policy_docs_list_every_rule_with_its_severity_and_sections(self) -> None:
        """docs/policy.md names each registered rule, its default severity and what it reads."""
        documented = _documented_rules()
        registered = {}
        for declared in REGISTRY:
            reads = [f"`{name}`" for name in declared.sections]
            if declared.reads_errors:
                reads.append("(the report's errors)")
            registered[declared.id] = (declared.severity, ", ".join(reads))
        assert not registered.keys() - documented.keys(), "rules missing from docs/policy.md"
        assert not documented.keys() - registered.keys(), "docs/policy.md names unknown rules"
        for rule_id, (severity, reads) in registered.items():
            assert documented[rule_id] == (severity, reads), f"docs/policy.md on {rule_id}"
