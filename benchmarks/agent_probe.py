"""One agent process, measured from inside: run it as its own process so its peak RSS is the
agent's alone (apt-get runs as a child and is counted separately).

    python -m benchmarks.agent_probe --url URL --enroll-secret S --state DIR --cycles N
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--enroll-secret", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()

    started = time.perf_counter()
    from fleetwatch.agent.cycle import Agent
    from fleetwatch.agent.settings import AgentSettings
    from fleetwatch.logs import configure_logging

    configure_logging("error", "json")

    settings = AgentSettings(
        collector_url=args.url,
        enroll_secret=args.enroll_secret,
        state_dir=args.state,
        host_id="bench-agent",
        log_level="error",
    )
    agent = Agent(settings)
    imported = time.perf_counter() - started

    cycles = []
    for _ in range(args.cycles + 1):
        wall = time.perf_counter()
        cpu_self, cpu_children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        agent.collect_and_spool()
        delivered = agent.deliver()
        cycles.append(
            {
                "wall": time.perf_counter() - wall,
                "cpu": _cpu(resource.RUSAGE_SELF) - cpu_self,
                "cpu_children": _cpu(resource.RUSAGE_CHILDREN) - cpu_children,
                "delivered": delivered,
            }
        )
    json.dump(
        {
            "import_seconds": imported,
            "first": cycles[0],
            "steady": cycles[1:],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
