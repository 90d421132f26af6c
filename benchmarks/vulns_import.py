"""Vulnerability data at full size: import time and peak memory, load and match cost.

    python -m benchmarks.vulns_import [--file TRACKER_JSON] [--database-url URL]

Without ``--file`` a document in the Debian Security Tracker's format is generated at the
size of the real one (see docs/benchmarks.md for its shape) into
/var/cache/fleetwatch-tests/. Each phase runs in a fresh process, so its peak RSS is its own:
parsing alone, the whole import (parse, date the fixes, compress, write in one transaction),
loading the stored data into a process's index, and matching a host (the captured Debian 12
package list) against it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path("/var/cache/fleetwatch-tests")
SOURCES = 6_000
ISSUES_PER_SOURCE = 22
RELEASES = ("bullseye", "bookworm", "trixie", "forky", "sid")


def generate(path: Path) -> None:
    """A tracker-format document of realistic size and shape (seeded, so always the same)."""
    rng = random.Random(10)
    urgencies = ["not yet assigned"] * 6 + ["low", "medium", "high", "unimportant", "low*"]
    with path.open("w") as out:
        out.write("{")
        for s in range(SOURCES):
            source = f"pkg{s:05d}"
            issues = {}
            for _ in range(rng.randint(1, 2 * ISSUES_PER_SOURCE)):
                cve = f"CVE-{rng.randint(2005, 2026)}-{rng.randint(1000, 99999)}"
                releases = {}
                for r, release in enumerate(RELEASES):
                    state: dict[str, object] = {
                        "status": rng.choice(["resolved"] * 7 + ["open", "undetermined"]),
                        "repositories": {release: f"{r + 1}.{s % 40}.{rng.randint(0, 9)}-1"},
                        "urgency": rng.choice(urgencies),
                    }
                    if state["status"] == "resolved":
                        state["fixed_version"] = rng.choice(
                            [
                                "0",
                                f"{r + 1}.{s % 40}.{rng.randint(0, 9)}-1+deb12u{rng.randint(1, 9)}",
                            ]
                        )
                    if rng.random() < 0.2:
                        state["nodsa"] = "Minor issue"
                        state["nodsa_reason"] = rng.choice(["", "postponed", "ignored"])
                    releases[release] = state
                issues[cve] = {
                    "description": "x" * rng.randint(60, 240),
                    "scope": rng.choice(["local", "remote"]),
                    "releases": releases,
                }
            out.write(("," if s else "") + json.dumps(source) + ":" + json.dumps(issues))
        out.write("}")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase(name: str, file: str, database_url: str) -> None:
    """One phase, in this process; prints a JSON line of its figures."""
    from fleetwatch.collector.storage.engine import make_engine, upgrade
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.vulns.data import KnownVulnerabilities
    from fleetwatch.collector.vulns.formats import read_path
    from fleetwatch.schema import PackagesData, SystemData
    from tests.helpers import section_data

    engine = make_engine(database_url)
    upgrade(engine)
    known = KnownVulnerabilities(Store(engine))
    base = _peak_mib()
    started = time.perf_counter()
    cpu = _cpu()
    figures: dict[str, object] = {}
    if name == "parse":
        (dataset,) = read_path(Path(file))
        figures["entries"] = len(dataset.entries)
    elif name == "import":
        (info,) = known.import_path(Path(file))
        figures["counts"] = info.counts
    elif name == "load":
        known.refresh()
        figures["entries"] = len(known.index)
    elif name == "match":
        known.refresh()
        started = time.perf_counter()
        cpu = _cpu()
        packages = PackagesData.model_validate(section_data("packages"))
        # the captured machine's packages, renamed onto the generated sources so they match
        rows = [
            (n, v, a, f"pkg{i * 7 % SOURCES:05d}", f"{i % 5}.{i % 40}.5-1")
            for i, (n, v, a, _, _) in enumerate(packages.packages)
        ]
        host = PackagesData(manager="dpkg", packages=rows)
        system = SystemData.model_validate(section_data("system"))
        first = time.perf_counter()
        matches = known.index.match("bookworm", host, None, system)
        figures["first_host_ms"] = round((time.perf_counter() - first) * 1000, 2)
        again, again_cpu = time.perf_counter(), _cpu()
        for _ in range(200):
            known.index.match("bookworm", host, None, system)
        figures["next_hosts_ms"] = round((time.perf_counter() - again) * 1000 / 200, 2)
        figures["next_hosts_cpu_ms"] = round((_cpu() - again_cpu) * 1000 / 200, 2)
        figures["matches"] = len(matches)
    figures["seconds"] = round(time.perf_counter() - started, 2)
    figures["cpu_seconds"] = round(_cpu() - cpu, 2)
    figures["peak_rss_mib"] = round(_peak_mib(), 1)
    figures["rss_before_mib"] = round(base, 1)
    print(json.dumps({"phase": name, **figures}))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path)
    parser.add_argument("--database-url")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.phase, str(args.file), args.database_url)
        return
    file = args.file
    if file is None:
        file = CACHE / "tracker-synthetic.json"
        if not file.exists():
            print(f"generating {file} ...", flush=True)
            generate(file)
    print(f"{file}: {file.stat().st_size / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/vulns.db"
        for name in ("parse", "import", "load", "match"):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.vulns_import",
                    "--phase",
                    name,
                    "--file",
                    str(file),
                    "--database-url",
                    url,
                ],
                check=True,
            )
    print("load average:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))


if __name__ == "__main__":
    main()
