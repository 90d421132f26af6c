"""The inventory as the baseline: `fleetwatch policy compile` with pyinfra's own loader."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from fleetwatch.collector.compliance.policy import Policy
from tests.helpers import BIN

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "inventory" / "fleet.py"


class InventoryError(Exception):
    """What `fleetwatch policy compile` said when it refused an inventory."""


def compile_policy(inventory: str) -> str:
    """The real command: pyinfra's loader patches the process for gevent, so not in this one."""
    done = subprocess.run(
        [str(BIN / "fleetwatch"), "policy", "compile", inventory],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise InventoryError(done.stderr.strip())
    return done.stdout


class TestCompile:
    def test_every_inventory_host_with_unit_groups_and_resolved_baseline(self) -> None:
        policy = Policy.from_text(compile_policy(str(EXAMPLE)))
        assert len(policy.hosts) == 7
        web = policy.for_host("web-01.parks.example.org")
        assert (web.unit, web.groups) == ("parks", ("web", "parks"))
        assert web.baseline.allowed_ports == ["tcp/22", "tcp/80", "tcp/443"]
        assert web.baseline.required_services == ["ssh", "nginx"]
        assert web.baseline.max_pending_security_updates == 0  # from the all group

    def test_host_data_overrides_group_data_as_in_a_deploy(self) -> None:
        policy = Policy.from_text(compile_policy(str(EXAMPLE)))
        assert policy.for_host("db-01.water.example.org").baseline.max_disk_percent == 95
        assert policy.for_host("db-01.parks.example.org").baseline.max_disk_percent == 90

    def test_later_groups_override_earlier_ones_as_pyinfra_does(self, tmp_path: Path) -> None:
        (tmp_path / "group_data").mkdir()
        (tmp_path / "fleet.py").write_text("first = ['h1']\nsecond = ['h1']\n")
        (tmp_path / "group_data" / "first.py").write_text('fleetwatch_allowed_ports = ["tcp/1"]\n')
        (tmp_path / "group_data" / "second.py").write_text('fleetwatch_allowed_ports = ["tcp/2"]\n')
        policy = Policy.from_text(compile_policy(str(tmp_path / "fleet.py")))
        assert policy.for_host("h1").baseline.allowed_ports == ["tcp/2"]

    def test_group_of_the_collectors_is_not_a_role(self) -> None:
        policy = Policy.from_text(compile_policy(str(EXAMPLE)))
        collector = policy.for_host("fleetwatch-01.ops.example.org")
        assert collector.groups == ("ops",)
        assert collector.baseline.allowed_ports == ["tcp/22", "tcp/8470"]

    def test_policy_has_defaults_then_groups_then_a_table_per_host(self) -> None:
        """The file reads as the policy docs show it: [defaults], [groups.X], [hosts."name"],
        then the response's tables ([units.X], [due_days], [waivers."name"]...)."""
        text = compile_policy(str(EXAMPLE))
        headers = [line for line in text.splitlines() if line.startswith("[")]
        groups = ["bastion", "database", "ops", "parks", "water", "web"]
        assert headers[0] == "[defaults]"
        assert headers[1:7] == [f"[groups.{group}]" for group in groups]
        hosts = [f'[hosts."{host}"]' for host in Policy.from_text(text).hosts]
        assert headers[7:14] == hosts
        assert len(hosts) == 7
        assert headers[14:] == [
            "[units.parks]",
            "[units.water]",
            "[due_days]",
            "[verification]",
            "[waivers.water-telemetry-bridge]",
            "[response]",
        ]

    def test_unset_values_are_left_out(self, tmp_path: Path) -> None:
        """A host without a unit, and a rule no group sets, have no key: TOML has no null."""
        (tmp_path / "fleet.py").write_text("h1 = ['h1']\n")
        text = compile_policy(str(tmp_path / "fleet.py"))
        assert "unit" not in text
        assert "max_disk_percent" not in text
        assert "[groups" not in text  # a group of one host's own name holds every host
        assert Policy.from_text(text).for_host("h1").unit is None

    def test_bad_baseline_value_is_named(self, tmp_path: Path) -> None:
        (tmp_path / "group_data").mkdir()
        (tmp_path / "fleet.py").write_text("web = ['h1']\n")
        (tmp_path / "group_data" / "web.py").write_text('fleetwatch_allowed_ports = ["http"]\n')
        with pytest.raises(InventoryError, match=r"h1.*allowed_ports\[0\].*is not a port"):
            compile_policy(str(tmp_path / "fleet.py"))

    def test_missing_inventory(self, tmp_path: Path) -> None:
        with pytest.raises(InventoryError, match="no such inventory file"):
            compile_policy(str(tmp_path / "nope.py"))

    def test_command_line_writes_a_valid_policy(self, tmp_path: Path) -> None:
        out = tmp_path / "policy.toml"
        subprocess.run(
            [str(BIN / "fleetwatch"), "policy", "compile", str(EXAMPLE), "-o", str(out)],
            check=True,
            capture_output=True,
        )
        checked = subprocess.run(
            [str(BIN / "fleetwatch"), "policy", "check", str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        assert "7 hosts" in checked.stdout


class TestPlacement:
    def test_only_the_admin_command_line_reaches_the_deploy_side(self) -> None:
        """`policy compile` is the deploy side's; the collector server never imports it."""
        importers = []
        for path in sorted((ROOT / "collector").rglob("*.py")):
            if "admin" in path.relative_to(ROOT / "collector").parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                importers += [
                    f"{path.relative_to(ROOT)}: {name}"
                    for name in names
                    if name == "fleetwatch.deploy" or name.startswith("fleetwatch.deploy.")
                ]
        assert importers == []


class TestResponse:
    def test_units_due_days_and_waivers_come_from_the_inventory(self) -> None:
        """fleetwatch_unit_contacts makes a unit's table; the all group's due days and
        verification, and a group's waivers, reach the policy."""
        policy = Policy.from_text(compile_policy(str(EXAMPLE)))
        parks = policy.units["parks"]
        assert (parks.title, parks.emails, parks.digest) == (
            "Parks and Gardens",
            ["it@parks.example.org"],
            "daily",
        )
        assert policy.units["ops"].emails == []  # named on hosts, no contacts
        assert policy.response.due_days.critical == 2
        assert (policy.response.verification.reports, policy.response.verification.hours) == (
            3,
            24,
        )
        waiver = policy.waivers["water-telemetry-bridge"]
        assert (waiver.scope, waiver.target, waiver.subject) == (
            "host",
            "web-01.water.example.org",
            "tcp/8081",
        )

    def test_a_unit_with_two_sets_of_contacts_is_refused(self, tmp_path: Path) -> None:
        """The error names the unit."""
        (tmp_path / "group_data").mkdir()
        (tmp_path / "fleet.py").write_text("a = ['h1']\nb = ['h2']\n")
        for group, email in (("a", "x@a.example.org"), ("b", "y@b.example.org")):
            (tmp_path / "group_data" / f"{group}.py").write_text(
                f'fleetwatch_unit = "parks"\nfleetwatch_unit_contacts = {{"emails": ["{email}"]}}\n'
            )
        with pytest.raises(InventoryError, match="unit 'parks' has two different"):
            compile_policy(str(tmp_path / "fleet.py"))

    def test_a_waiver_without_expiry_is_a_policy_error_naming_it(self, tmp_path: Path) -> None:
        """Expiry is mandatory: the message names the waiver and the key."""
        (tmp_path / "group_data").mkdir()
        (tmp_path / "fleet.py").write_text("a = ['h1']\n")
        (tmp_path / "group_data" / "a.py").write_text(
            'fleetwatch_waivers = {"forever": {"host": "h1", "rule": "allowed_ports",'
            ' "reason": "r", "owner": "o"}}\n'
        )
        with pytest.raises(InventoryError, match=r'\[waivers\."forever"\] expires: Field required'):
            compile_policy(str(tmp_path / "fleet.py"))
