"""What an unchanged report costs as the fleet grows, and the housekeeping around it.

    python -m benchmarks.fleet_size --hosts 100 10000 [--postgres URL] [--policy FILE]

For each fleet size it seeds a fleet in process (each host enrolled through `Identity`, its
first report in full through the ingestor, 40 package lists shared as in `benchmarks.fleet`),
then takes ``--reports`` unchanged reports (sections by hash, fresh ``resources``, as real
agents send between changes) in batches of ``--batch``, as the writer thread does, and prints
the writer's CPU per report (PostgreSQL's backends too), statements and rows written to the
findings table per report, and the CPU of one round of the housekeeper's casework (silent
hosts, waivers, overdue findings), which runs every ``policy_check_interval`` seconds: with
the fleet reporting, then an hour later with every host silent (the round that announces
them, the rounds after it, and the full round the silent-host watch makes every
`FULL_ROUND_EVERY`).

No HTTP: parsing and the HTTP layers cost the same per report whatever the fleet
(`benchmarks.fleet` measures them). What this isolates is work whose cost follows the number
of hosts. With ``--policy`` the fleet is evaluated against that policy (open findings on
every host, which unchanged reports must leave alone).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, event, text

from benchmarks.ingest_load import section, synthetic_packages
from fleetwatch.collector.compliance.watch import FULL_ROUND_EVERY
from fleetwatch.collector.ingest.writer import Submission
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report
from tests.helpers import BASE_REPORT, section_data

VARIANTS = 40
PACKAGES = 1500
SECRET = "fleet-size-benchmark"


def _resources(rng: random.Random) -> dict[str, Any]:
    data = section_data("resources")
    data["load_average"] = [round(rng.uniform(0, 4), 2) for _ in range(3)]
    return section("resources", data)


def _templates(rng: random.Random) -> list[Report]:
    fixed = {n: section(n, section_data(n)) for n in ("system", "ports", "services", "checks")}
    base = BASE_REPORT["sections"]["packages"]["data"]["packages"]
    updates = section("updates", section_data("updates"))
    return [
        Report.model_validate(
            {
                "schema_version": 1,
                "host_id": "template",
                "instance_id": "0" * 32,
                "sequence": 1,
                "collected_at": datetime.now(UTC).isoformat(),
                "agent_version": "0.1.0",
                "sections": {
                    **fixed,
                    "packages": section(
                        "packages",
                        {
                            "manager": "dpkg",
                            "packages": synthetic_packages(base, PACKAGES, f"v{v}"),
                        },
                    ),
                    "updates": updates,
                    "resources": _resources(rng),
                },
            }
        )
        for v in range(VARIANTS)
    ]


def _hashes(report: Report) -> dict[str, str]:
    """The collector's own hash of each section sent in full (`ingest.writer`)."""
    found = {}
    for name, value in report.sections:
        if value is not None and value.data is not None and name != "resources":
            found[name] = hashlib.sha256(value.data.model_dump_json().encode()).hexdigest()
    return found


class _Postgres:
    """CPU of the PostgreSQL backends serving one database."""

    def __init__(self, database: str | None) -> None:
        self.database = database

    def cpu(self) -> float:
        if self.database is None:
            return 0.0
        total = 0.0
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and f" {self.database} " in cmdline:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
        return total


def _database(args: argparse.Namespace, tmp: Path, hosts: int) -> tuple[str, str | None]:
    if not args.postgres:
        return f"sqlite:///{tmp / f'fleet-{hosts}.db'}", None
    name = f"{args.database_prefix}_{hosts}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return args.postgres.rsplit("/", 1)[0] + "/" + name, name


def _drop(args: argparse.Namespace, name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def run(args: argparse.Namespace, tmp: Path, count: int) -> None:
    url, name = _database(args, tmp, count)
    settings = CollectorSettings(
        database_url=url,
        enroll_secret=SECRET,
        data_dir=tmp,
        policy=args.policy,
        policy_check_interval=3600,  # the housekeeper's rounds are timed here, one by one
    )
    svc = CollectorService(settings)
    svc.start()
    try:
        rng = random.Random(1)
        templates = _templates(rng)
        hashes = [_hashes(t) for t in templates]
        started = time.monotonic()
        hosts: list[tuple[str, str, int]] = []  # id, instance, package list
        for first in range(0, count, 200):
            batch = []
            for n in range(first, min(first + 200, count)):
                host_id = f"size-{n:06d}.sim"
                svc.identity.enroll(host_id, SECRET)
                instance = uuid.uuid4().hex
                hosts.append((host_id, instance, n % VARIANTS))
                report = templates[n % VARIANTS].model_copy(
                    update={
                        "host_id": host_id,
                        "instance_id": instance,
                        "collected_at": datetime.now(UTC),
                    }
                )
                batch.append(Submission(report, host_id, datetime.now(UTC)))
            svc.ingestor.ingest_batch(batch)
        seeded = time.monotonic() - started
        submissions = []
        for i in range(args.reports):
            host_id, instance, variant = hosts[i % count]
            body = {
                "schema_version": 1,
                "host_id": host_id,
                "instance_id": instance,
                "sequence": 2 + i // count,
                "collected_at": datetime.now(UTC).isoformat(),
                "agent_version": "0.1.0",
                "sections": {
                    **{n: {"hash": h} for n, h in hashes[variant].items()},
                    "resources": _resources(rng),
                },
            }
            submissions.append(Submission(Report.model_validate(body), host_id, datetime.now(UTC)))
        written = {"statements": 0, "rows": 0}

        def tally(_conn: Any, cursor: Any, statement: str, *_rest: Any) -> None:
            words = statement.split(None, 3)
            if words[0].upper() in {"INSERT", "UPDATE", "DELETE"} and "findings" in words[:3]:
                written["statements"] += 1
                written["rows"] += max(cursor.rowcount, 0)

        postgres = _Postgres(name)
        event.listen(svc.engine, "after_cursor_execute", tally)
        db_before, cpu_before = postgres.cpu(), time.process_time()
        for start in range(0, len(submissions), args.batch):
            svc.ingestor.ingest_batch(submissions[start : start + args.batch])
        cpu, db = time.process_time() - cpu_before, postgres.cpu() - db_before
        event.remove(svc.engine, "after_cursor_execute", tally)
        with svc.store.read() as conn:
            open_findings = len(svc.store.findings.open_where(conn))

        def tick(at: datetime) -> tuple[float, float]:
            db_before, cpu_before = postgres.cpu(), time.process_time()
            svc.casework.tick(at)
            return time.process_time() - cpu_before, postgres.cpu() - db_before

        now = datetime.now(UTC)
        tick_cpu, tick_db = min(tick(now + timedelta(seconds=5 * n)) for n in range(3))
        # the whole fleet silent for an hour: announced in one (full) round, then the rounds
        # between full ones, then a full round again
        silent = now + timedelta(hours=1)
        announced = tick(silent)
        between = min(tick(silent + timedelta(seconds=5 * n)) for n in range(1, 4))
        full = tick(silent + FULL_ROUND_EVERY + timedelta(seconds=1))
    finally:
        svc.stop()
        _drop(args, name)
    label = "PostgreSQL" if name else "SQLite"
    reports = max(args.reports, 1)
    print(
        f"{label}, {count} hosts (seeded in {seeded:.0f} s): {args.reports} unchanged reports "
        f"in batches of {args.batch}: writer {cpu / reports * 1000:.2f} ms CPU a report"
        + (f" + PostgreSQL {db / reports * 1000:.2f} ms" if name else "")
        + f"; {open_findings} open findings; written to them: "
        f"{written['statements'] / reports:.2f} statements, "
        f"{written['rows'] / reports:.2f} rows a report; a housekeeping round "
        f"{_round(tick_cpu, tick_db, name)}; with every host silent: the round announcing "
        f"them {_round(*announced, name)}, the rounds after {_round(*between, name)}, "
        f"a full round {_round(*full, name)}",
        flush=True,
    )


def _round(cpu: float, db: float, postgres: str | None) -> str:
    return f"{cpu * 1000:.0f} ms CPU" + (f" + PostgreSQL {db * 1000:.0f} ms" if postgres else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_size", description=__doc__)
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 10000])
    parser.add_argument("--reports", type=int, default=2000, help="unchanged reports timed")
    parser.add_argument("--batch", type=int, default=25, help="reports a writer batch takes")
    parser.add_argument("--policy", type=Path, help="a policy file (default: none)")
    parser.add_argument("--postgres", help="PostgreSQL URL: a database per fleet size is made")
    parser.add_argument("--database-prefix", default="bench_fleet_size")
    args = parser.parse_args()
    from benchmarks.__main__ import machine

    print(f"machine: {machine()}; load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="fleetwatch-size-") as directory:
        for count in args.hosts:
            run(args, Path(directory), count)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")


if __name__ == "__main__":
    main()
