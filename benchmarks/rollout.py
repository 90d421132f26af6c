"""Rollout figures: the agent deploy to N lab hosts, fresh and again with nothing to change."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab import Lab, missing_requirements

ROOT = Path(__file__).parent.parent


def _pyinfra(inventory: Path, *args: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "pyinfra"),
            "-y",
            str(inventory),
            "deploy/recipes/install_agent.py",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:] + done.stdout[-3000:])
    return time.perf_counter() - started


def bench_rollout(hosts: int) -> None:
    reason = missing_requirements()
    if reason:
        print(f"rollout: skipped ({reason})")
        return
    with tempfile.TemporaryDirectory(prefix="fleetwatch-rollout-") as tmp:
        directory = Path(tmp)
        names = [f"bench-{i:02d}" for i in range(1, hosts + 1)]
        lab = Lab.create(Path(f"/tmp/fwlab-bench-{os.getpid()}"), names)
        try:
            inventory = directory / "fleet.py"
            inventory.write_text(f"hosts = {[(h.name, h.inventory_data) for h in lab.hosts]!r}\n")
            (directory / "group_data").mkdir()
            connection = "\n".join(f"{k} = {v!r}" for k, v in lab.inventory_data().items())
            (directory / "group_data" / "all.py").write_text(
                f"{connection}\nfleetwatch_collector_url = 'http://{lab.gateway}:9'\n"
                "fleetwatch_allow_insecure_http = True\nfleetwatch_enroll_secret = 'bench'\n"
            )
            env = {**os.environ, "XDG_CACHE_HOME": str(directory / "cache")}
            # The first build of the wheelhouse downloads wheels: timed on its own.
            started = time.perf_counter()
            from fleetwatch.deploy import wheels

            wheels.CACHE = directory / "cache" / "fleetwatch"
            wheels.build(ROOT, wheels.Target("3.11", os.uname().machine, "2.36"))
            build = time.perf_counter() - started
            fresh = _pyinfra(inventory, env=env)
            again = _pyinfra(inventory, env=env)
        finally:
            lab.destroy()
    print(
        f"rollout of the agent to {hosts} lab hosts (pyinfra over SSH, wheelhouse upload, "
        "all hosts at once)"
    )
    print(f"  wheelhouse build (first time, downloads wheels): {build:.1f} s")
    print(f"  fresh rollout:    {fresh:.1f} s wall, {fresh / hosts:.2f} s a host")
    print(f"  no-change re-run: {again:.1f} s wall, {again / hosts:.2f} s a host")
