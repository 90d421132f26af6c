"""The example inventory deploys as written once `fleetwatch bootstrap` made its files: the
real `pyinfra --dry` runs the collector and agent recipes on it, over SSH, against lab hosts
that carry the inventory's own names (an SSH config file maps them to lab addresses, as an
operator's would map them to real ones)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).parent.parent.parent
COLLECTOR = "fleetwatch-01.ops.example.org"
AGENTS = ["web-01.parks.example.org", "db-01.water.example.org"]


def ssh_config(path: Path, lab: Any) -> Path:
    lines = []
    for host in lab.hosts:
        lines += [
            f"Host {host.name}",
            f"    HostName {host.address}",
            "    User root",
            f"    IdentityFile {lab.key}",
            "    StrictHostKeyChecking no",
            "    UserKnownHostsFile /dev/null",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def dry_run(
    recipe: str, config: Path, env: dict[str, str], *limits: str
) -> subprocess.CompletedProcess[str]:
    """The real `pyinfra --dry` from the repository root, as docs/deploy.md runs it. With
    --dry, pyinfra connects, gathers facts and runs the deploy code (every check the deploy
    makes of its data included), and changes nothing on the hosts."""
    argv = [str(BIN / "pyinfra"), "-y", "--dry", "inventory/fleet.py", recipe]
    for limit in limits:
        argv += ["--limit", limit]
    argv += ["--data", f"ssh_config_file={config}"]
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def ready(done: subprocess.CompletedProcess[str], recipe: str, hosts: list[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for name in hosts:
        assert re.search(rf"\[{re.escape(name)}\]\s+Ready: {re.escape(recipe)}", output), output[
            -4000:
        ]
    return output


def test_the_example_inventory_deploys_as_written(make_lab: Any, tmp_path: Path) -> None:
    """bootstrap, then `pyinfra --dry` of both recipes on inventory/fleet.py: no error, and no
    secret in the output."""
    lab = make_lab([COLLECTOR, *AGENTS])
    fleet = tmp_path / "fleet"
    made = subprocess.run(
        [str(BIN / "fleetwatch"), "bootstrap", str(fleet), "--name", COLLECTOR],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env["FLEETWATCH_BOOTSTRAP_DIR"] = str(fleet)
    config = ssh_config(tmp_path / "ssh_config", lab)
    collector_recipe = "deploy/recipes/install_collector.py"
    agent_recipe = "deploy/recipes/install_agent.py"

    # without the bootstrap files, the deploy stops and says what is missing
    missing = dry_run(collector_recipe, config, {**env, "FLEETWATCH_BOOTSTRAP_DIR": str(tmp_path)})
    assert missing.returncode != 0
    assert "`fleetwatch bootstrap` makes" in missing.stdout + missing.stderr

    outputs = [
        ready(
            dry_run(collector_recipe, config, env, "fleetwatch_collectors"),
            collector_recipe,
            [COLLECTOR],
        ),
        ready(dry_run(agent_recipe, config, env, *AGENTS), agent_recipe, AGENTS),
    ]
    for secret in ("enroll-secret", "admin-token", "collector.key"):
        value = (fleet / secret).read_text().strip()
        assert all(value not in output for output in outputs), f"{secret} in pyinfra's output"
