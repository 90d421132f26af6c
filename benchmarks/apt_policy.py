"""What asking apt's policy adds to collecting pending updates, on this host.

Runs `Dpkg().pending_updates()` five times and prints, per command, the median wall time and
the median CPU time of the child process (CPU time moves less than wall time when other work
shares the cores), and the largest child's peak RSS.

    .venv/bin/python benchmarks/apt_policy.py
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import TYPE_CHECKING

from fleetwatch.agent.commands import run_command
from fleetwatch.agent.package_managers.dpkg import Dpkg

if TYPE_CHECKING:
    from collections.abc import Sequence

RUNS = 5


def main() -> None:
    figures: dict[str, list[tuple[float, float]]] = {}

    def timed(argv: Sequence[str], timeout: float) -> str:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = run_command(argv, timeout)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        name = " ".join(argv[:2]) + (" PKG..." if argv[0] == "apt-cache" and len(argv) > 2 else "")
        figures.setdefault(name, []).append((wall, cpu))
        return out

    manager = Dpkg(run=timed)
    for _ in range(RUNS):
        data = manager.pending_updates()
    print(f"load average {os.getloadavg()[0]:.2f}; {RUNS} runs")
    for name, runs in figures.items():
        wall = statistics.median(w for w, _ in runs) * 1000
        cpu = statistics.median(c for _, c in runs) * 1000
        print(f"{name:28s} wall {wall:8.0f} ms   CPU {cpu:7.0f} ms")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    held = sum(1 for u in data.updates if u.held_back)
    print(f"largest child peak RSS {peak:.1f} MB; {len(data.updates)} updates, {held} held back")


if __name__ == "__main__":
    main()
