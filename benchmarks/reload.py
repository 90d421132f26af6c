"""Policy reloads at fleet scale: how long evaluating again takes, and how many hosts it costs.

    python -m benchmarks.reload --hosts 100000 [--postgres URL] [--skip-sqlite]

Seeds ``--hosts`` hosts through the storage layer: each listed in the policy with a unit and
one of 100 groups, holding a latest report as real agents leave it (packages and updates
from one of 40 package lists, as fleets built from a few images have; the system, ports,
services and checks sections; resources kept inline, different on every host), then
evaluates every host once (their findings as reports would have opened them). Then it
reloads three policies and times the housekeeper's pass (`Ingestor.reevaluate`) after each:

- the same policy with a comment added: no host's baseline changed;
- one group's baseline changed: 1 % of the hosts;
- the defaults changed: every host (the worst case).

During the last, a thread keeps taking reports (hash-only, with fresh resources, as quiet
agents send them) at ``--ingest-rate`` a second, and the latency of each is printed: ingest
goes on during a reload. On PostgreSQL the fleet lives in a schema of its own, dropped after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from benchmarks.__main__ import _postgres_schema_url, machine
from benchmarks.ingest_load import synthetic_packages
from fleetwatch.collector.compliance.findings import Compliance
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.ingest.writer import Ingestor
from fleetwatch.collector.storage.blobs import NewBlob
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import findings, hosts
from fleetwatch.schema import SECTION_TYPES, Report
from tests.helpers import BASE_REPORT, section_data

if TYPE_CHECKING:
    from collections.abc import Callable

GROUPS = 100
UNITS = 95
VARIANTS = 40
PACKAGES = 1500
BATCH = 5000
INSTANCE = "b" * 32

BASE_POLICY = """\
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 3600
max_disk_percent = 90
forbidden_packages = ["telnetd"]
"""


def _policy(count: int, disk: int = 90, group_extra: dict[int, str] | None = None) -> str:
    lines = [BASE_POLICY.replace("max_disk_percent = 90", f"max_disk_percent = {disk}")]
    for g in range(GROUPS):
        lines.append(f"[groups.g{g:02d}]")
        lines.append(f'allowed_ports = ["tcp/22", "tcp/{8000 + g}"]')
        lines.append((group_extra or {}).get(g, ""))
    for i in range(count):
        lines.append(f'[hosts."{_host_id(i)}"]')
        lines.append(f'unit = "unit{i % UNITS:02d}"')
        lines.append(f'groups = ["g{i % GROUPS:02d}"]')
    return "\n".join(lines) + "\n"


def _host_id(i: int) -> str:
    return f"h{i:06d}.unit{i % UNITS:02d}"


def _content(name: str, data: dict[str, Any]) -> tuple[str, bytes]:
    payload = SECTION_TYPES[name].model_validate(data).model_dump_json().encode()  # type: ignore[index]
    return hashlib.sha256(payload).hexdigest(), payload


def _contents() -> tuple[dict[str, tuple[str, bytes]], list[dict[str, tuple[str, bytes]]]]:
    """The sections every host shares, and the package lists (with their updates)."""
    fixed = {name: _content(name, section_data(name)) for name in ("system", "services", "checks")}
    ports = section_data("ports")
    fixed["ports"] = _content("ports", ports)
    base = BASE_REPORT["sections"]["packages"]["data"]["packages"]
    variants = []
    for v in range(VARIANTS):
        packages = synthetic_packages(base, PACKAGES, f"v{v}")
        if v % 8 == 0:  # a few images carry a forbidden package
            packages.append(["telnetd", "0.17-44", "amd64", "netkit-telnet", "0.17-44"])
        variants.append(
            {
                "packages": _content("packages", {"manager": "dpkg", "packages": packages}),
                "updates": _content("updates", section_data("updates")),
            }
        )
    return fixed, variants


def _resources(rng: random.Random) -> tuple[str, str]:
    data = section_data("resources")
    data["load_average"] = [round(rng.uniform(0, 4), 2) for _ in range(3)]
    for mount in data.get("mounts", []):
        mount["percent"] = round(rng.uniform(20, 97), 1)
    payload = SECTION_TYPES["resources"].model_validate(data).model_dump_json()  # type: ignore[index]
    return hashlib.sha256(payload.encode()).hexdigest(), payload


def seed(store: Store, count: int) -> None:
    rng = random.Random(13)
    fixed, variants = _contents()
    now = datetime.now(UTC)
    with store.write() as conn:
        blobs = [NewBlob(h, name, p) for name, (h, p) in fixed.items()]
        blobs += [NewBlob(h, name, p) for v in variants for name, (h, p) in v.items()]
        store.blobs.add(conn, list({b.hash: b for b in blobs}.values()), now)
    for start in range(0, count, BATCH):
        rows = []
        for i in range(start, min(count, start + BATCH)):
            seen = now - timedelta(seconds=rng.randint(10, 290))
            held = {**fixed, **variants[rng.randrange(VARIANTS)]}
            resources_hash, resources = _resources(rng)
            rows.append(
                {
                    "host_id": _host_id(i),
                    "unit": f"unit{i % UNITS:02d}",
                    "enrolled_at": now - timedelta(days=30),
                    "instance_id": INSTANCE,
                    "last_sequence": 3,
                    "last_collected_at": seen,
                    "last_received_at": seen,
                    "agent_version": "0.1.0",
                    "sections": {
                        **{name: {"hash": h} for name, (h, _) in held.items()},
                        "resources": {"hash": resources_hash},
                    },
                    "conditions": {},
                    "dropped_total": 0,
                    "inline": {"resources": resources},
                }
            )
        with store.write() as conn:
            conn.execute(insert(hosts), rows)
        print(f"  seeded {start + len(rows)} hosts", end="\r", flush=True)
    print()


class Reporter(threading.Thread):
    """Quiet reports from random hosts at a steady rate, each in its own batch, timed."""

    def __init__(self, ingestor: Ingestor, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.ingestor, self.count, self.rate = ingestor, count, rate
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.sequences: dict[str, int] = {}

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.wait(1 / self.rate):
            host_id = _host_id(rng.randrange(self.count))
            with self.ingestor.store.read() as conn:
                host = self.ingestor.store.hosts.get(conn, host_id)
            if host is None:
                continue
            sequence = (host.last_sequence or 0) + 1
            sections: dict[str, Any] = {
                name: {"hash": state.hash}
                for name, state in host.sections.items()
                if name != "resources" and state.hash
            }
            resources_hash, resources = _resources(rng)
            sections["resources"] = {"hash": resources_hash, "data": json.loads(resources)}
            report = Report.model_validate(
                {
                    "schema_version": 1,
                    "host_id": host_id,
                    "instance_id": INSTANCE,
                    "sequence": sequence,
                    "collected_at": datetime.now(UTC).isoformat(),
                    "agent_version": "0.1.0",
                    "sections": sections,
                }
            )
            started = time.monotonic()
            try:
                self.ingestor.ingest(report, host_id)
            except Exception:  # noqa: BLE001  (counted and shown)
                self.errors += 1
            self.latencies.append(time.monotonic() - started)


def _open_findings(store: Store) -> int:
    with store.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(findings).where(findings.c.resolved_at.is_(None))
            ).scalar_one()
        )


def bench(label: str, url: str, count: int, directory: Path, ingest_rate: float) -> None:
    print(f"{label}, {count} hosts")
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    path = directory / f"policy-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(_policy(count))
    started = time.monotonic()
    seed(store, count)
    print(f"  seeding: {time.monotonic() - started:.0f} s")
    policy = PolicySource(path)
    ingestor = Ingestor(store, policy, Compliance(store))

    def timed(
        what: str, text: str | None, make_reporter: Callable[[], Reporter] | None = None
    ) -> Reporter | None:
        if text is not None:
            path.write_text(text)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
            loaded = time.monotonic()
            if not policy.reload_if_changed():
                raise SystemExit(f"policy not loaded: {policy.error}")
            load = time.monotonic() - loaded
        else:
            load = 0.0
        reporter = None if make_reporter is None else make_reporter()
        if reporter is not None:
            reporter.start()
        began, cpu = time.monotonic(), time.process_time()
        evaluated = ingestor.reevaluate()
        seconds, cpu = time.monotonic() - began, time.process_time() - cpu
        print(
            f"  {what}: {evaluated} hosts evaluated in {seconds:.1f} s "
            f"({cpu:.1f} s CPU in this process) "
            f"(policy file read in {load:.1f} s); {_open_findings(store)} findings open"
        )
        return reporter

    timed("first evaluation of every host (no digest recorded yet)", None)
    timed("policy rewritten, no baseline changed", _policy(count) + "# a comment\n")
    timed(
        "one group's baseline changed (1 % of hosts)",
        _policy(count, group_extra={7: "max_disk_percent = 60"}),
    )

    def another_worker() -> Reporter:
        # its own engine, so on SQLite it waits on the database as another process does; it
        # follows the policy file as every worker does
        other = Store(make_engine(url))
        source = PolicySource(path)
        return Reporter(Ingestor(other, source, Compliance(other)), count, ingest_rate)

    reporter = timed(
        "the defaults changed (every host)",
        _policy(count, disk=80, group_extra={7: "max_disk_percent = 60"}),
        another_worker,
    )
    assert reporter is not None
    reporter.stop.set()
    reporter.join()
    lat = sorted(reporter.latencies) or [0.0]
    print(
        f"  reports taken meanwhile: {len(reporter.latencies)} ({reporter.errors} errors), "
        f"latency median {statistics.median(lat) * 1000:.0f} ms, "
        f"p99 {lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms"
    )
    timed("the same policy again, checked on taking the lease", None)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload", description=__doc__)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FLEETWATCH_TEST_DATABASE_URL"),
        help="PostgreSQL URL to run on too (the fleet gets a schema of its own)",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--ingest-rate", type=float, default=20, help="reports a second during the worst case"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="fleetwatch-reload-") as directory:
        tmp = Path(directory)
        if args.postgres:
            url, drop = _postgres_schema_url(args.postgres)
            try:
                bench("PostgreSQL", url, args.hosts, tmp, args.ingest_rate)
            finally:
                drop()
        if not args.skip_sqlite:
            bench("SQLite", f"sqlite:///{tmp / 'reload.db'}", args.hosts, tmp, args.ingest_rate)


if __name__ == "__main__":
    main()
