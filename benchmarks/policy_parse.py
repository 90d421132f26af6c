"""Reading a large policy file: CPU to parse its TOML and to validate it, before and after.

    python -m benchmarks.policy_parse --hosts 100000 [--own 0.01] [--rounds 3]

Writes the policy `benchmarks.reload` uses (100 groups; each host its own table with a unit
and one group), a fraction ``--own`` of the hosts with a key of their own (``max_report_age``,
different on every host: no two of their tables alike), and times in this process, each the
best of ``--rounds``:

- parsing: `tomllib` (as before) and `compliance.policy_toml` (toml-rs, as now);
- validating: the whole file as one model (as before) and as `Policy.from_text` does now;
- `Policy.from_text` whole (parsing, validating, building the policy).

CPU time of the process (`time.process_time`), the steadier figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tomllib
from typing import TYPE_CHECKING, Any, TypeVar

from benchmarks.__main__ import machine
from benchmarks.reload import _policy
from fleetwatch.collector.compliance import policy_toml
from fleetwatch.collector.compliance.policy import Policy, _PolicyFile, _validated

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def policy_text(hosts: int, own: float) -> str:
    """The reload benchmark's policy, a fraction of its hosts with a value of their own."""
    every = round(1 / own) if own > 0 else 0
    lines = []
    host = 0
    for line in _policy(hosts).splitlines():
        lines.append(line)
        if line.startswith("groups ="):  # the last line of a host's table
            if every and host % every == 0:
                lines.append(f"max_report_age = {900 + host}")
            host += 1
    return "\n".join(lines) + "\n"


def best_cpu(rounds: int, work: Callable[[], T]) -> tuple[float, T]:
    """The least CPU time of ``rounds`` runs of ``work``, and what it returned."""
    times = []
    for _ in range(rounds):
        gc.collect()  # no collection of the previous run's garbage counted in this one
        started = time.process_time()
        result = work()
        times.append(time.process_time() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.policy_parse", description=__doc__)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--own", type=float, default=0.0, help="fraction of hosts with own keys")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    text = policy_text(args.hosts, args.own)
    print(f"{args.hosts} hosts, {args.own:.0%} with keys of their own, {len(text) / 1e6:.1f} MB")

    rows: list[tuple[str, float]] = []
    before, data = best_cpu(args.rounds, lambda: tomllib.loads(text))
    after, fast = best_cpu(args.rounds, lambda: policy_toml.loads(text))
    assert fast == data
    rows += [("parse: tomllib (before)", before), ("parse: policy_toml (now)", after)]
    shallow, _ = best_cpu(args.rounds, lambda: policy_toml.shallow(text))
    rows.append(("  of which the nesting check", shallow))

    whole: Callable[[], Any] = lambda: _PolicyFile.model_validate(data)  # noqa: E731
    before, reference = best_cpu(args.rounds, whole)
    after, parsed = best_cpu(args.rounds, lambda: _validated(data))
    assert parsed == reference
    rows += [("validate: one model (before)", before), ("validate: shared entries (now)", after)]
    total, _ = best_cpu(args.rounds, lambda: Policy.from_text(text))
    rows.append(("Policy.from_text (now)", total))
    for label, seconds in rows:
        print(f"  {label:34} {seconds:6.2f} s CPU")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
