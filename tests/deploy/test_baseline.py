"""The inventory as the baseline: `fleetwatch policy compile` with pyinfra's own loader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetwatch.collector.compliance.policy import Policy
from tests.helpers import BIN

EXAMPLE = Path(__file__).parent.parent.parent / "inventory" / "fleet.py"


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
