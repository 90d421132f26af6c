"""fleetwatch benchmarks: print figures for the agent and the collector.

    python -m benchmarks                      agent cycle and ingest on SQLite
    python -m benchmarks --postgres URL       ... and ingest on PostgreSQL too
    python -m benchmarks --only agent|ingest|rollout|metrics

The collector runs as the real `fleetwatch serve` process and every report crosses real HTTP
on loopback. Per-host rate limits are lifted for the ingest runs (a benchmark host reports
far more often than a real one may).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import requests

from benchmarks.ingest_load import Job, gz, run_load, section, synthetic_packages
from benchmarks.metrics_scrape import bench_metrics
from benchmarks.rollout import bench_rollout
from tests.helpers import BASE_REPORT, CollectorProcess, section_data

PACKAGES = 1500


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    release = (
        dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        .get("PRETTY_NAME", "?")
        .strip('"')
    )
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; {release}; "
        f"Python {platform.python_version()}"
    )


def bench_agent(tmp: Path, cycles: int) -> None:
    collector = CollectorProcess(tmp, f"sqlite:///{tmp / 'agent-bench.db'}").start()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.agent_probe",
                "--url",
                collector.url,
                "--enroll-secret",
                collector.enroll_secret,
                "--state",
                str(tmp / "agent-state"),
                "--cycles",
                str(cycles),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        collector.stop()
    figures = json.loads(done.stdout)
    first, steady = figures["first"], figures["steady"]
    walls = sorted(c["wall"] for c in steady)
    cpus = sorted(c["cpu"] + c["cpu_children"] for c in steady)
    print("agent (collect + spool + deliver to a local collector, one process)")
    print(
        f"  first cycle:        {first['wall']:.2f} s wall, "
        f"{first['cpu']:.2f} s CPU in the agent + {first['cpu_children']:.2f} s in apt-get "
        "and systemctl"
    )
    print(
        f"  steady-state cycle: median {statistics.median(walls) * 1000:.0f} ms wall "
        f"(p90 {walls[int(len(walls) * 0.9) - 1] * 1000:.0f} ms), "
        f"median {statistics.median(cpus) * 1000:.0f} ms CPU, over {len(steady)} cycles"
    )
    print(
        f"  peak RSS:           {figures['peak_rss_mb']:.1f} MB agent process; "
        f"{figures['children_peak_rss_mb']:.1f} MB its largest child (apt-get)"
    )
    print(f"  start-up:           {figures['import_seconds'] * 1000:.0f} ms to import and set up")


def _enroll(collector: CollectorProcess, host_id: str) -> str:
    response = requests.post(
        collector.url + "/api/v1/enroll",
        timeout=30,
        json={"host_id": host_id, "enroll_secret": collector.enroll_secret},
    )
    response.raise_for_status()
    return str(response.json()["token"])


def _collector_cpu(process: Any) -> float:
    """CPU seconds used so far by the collector and its worker processes."""
    import psutil

    parent = psutil.Process(process.pid)
    total = 0.0
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _timed(collector: CollectorProcess, jobs: list[Job]) -> tuple[int, int, float, float]:
    cpu = _collector_cpu(collector.process)
    ok, errors, seconds = run_load(jobs)
    return ok, errors, seconds, _collector_cpu(collector.process) - cpu


def bench_ingest(
    tmp: Path, label: str, database_url: str, hosts: int, per_host: int, workers: int
) -> None:
    label = f"{label}, {workers} worker{'s' if workers > 1 else ''}"
    collector = CollectorProcess(
        tmp,
        database_url,
        extra_env={
            "FLEETWATCH_WORKERS": str(workers),
            "FLEETWATCH_HOST_RATE": "1000000",
            "FLEETWATCH_HOST_BURST": "1000000",
            "FLEETWATCH_ENROLL_RATE": "1000000",
            "FLEETWATCH_ENROLL_BURST": "1000000",
            "FLEETWATCH_LOG_LEVEL": "warning",
        },
    ).start()
    try:
        base_packages = BASE_REPORT["sections"]["packages"]["data"]["packages"]
        others = {
            name: section(name, section_data(name))
            for name in ("system", "updates", "ports", "services", "checks", "resources")
        }
        warm_jobs, full_jobs, hash_jobs = [], [], []
        instance = uuid.uuid4().hex
        for h in range(hosts):
            host_id = f"bench-{h:04d}"
            token = _enroll(collector, host_id)
            bodies = []
            for seq in range(1, per_host + 2):
                packages = section(
                    "packages",
                    {
                        "manager": "dpkg",
                        "packages": synthetic_packages(base_packages, PACKAGES, f"{h}.{seq}"),
                    },
                )
                bodies.append(gz(_report(host_id, instance, seq, {**others, "packages": packages})))
            # the first report of each host is not timed: connections, caches and the
            # database's first pages warm up on it
            warm_jobs.append(Job(collector.url, token, bodies[:1]))
            full_jobs.append(Job(collector.url, token, bodies[1:]))
            hash_only = {
                name: {"hash": s["hash"]} for name, s in {**others, "packages": packages}.items()
            }
            hash_jobs.append(
                Job(
                    collector.url,
                    token,
                    [
                        gz(_report(host_id, instance, seq, hash_only))
                        for seq in range(per_host + 2, per_host * 11 + 2)
                    ],
                )
            )
        run_load(warm_jobs)
        ok, errors, seconds, cpu = _timed(collector, full_jobs)
        size = sum(len(b) for j in full_jobs for b, _ in j.bodies) / max(1, ok + errors) / 1024
        print(
            f"  {label}: full reports ({PACKAGES} packages, {size:.0f} KiB gzip each): "
            f"{ok / seconds:.0f}/s ({ok} in {seconds:.1f} s, {errors} errors; collector CPU "
            f"{cpu / max(ok, 1) * 1000:.1f} ms a report)"
        )
        ok, errors, seconds, cpu = _timed(collector, hash_jobs)
        print(
            f"  {label}: hash-only reports: {ok / seconds:.0f}/s ({ok} in {seconds:.1f} s, "
            f"{errors} errors; collector CPU {cpu / max(ok, 1) * 1000:.2f} ms a report)"
        )
    finally:
        collector.stop()


def _report(host_id: str, instance: str, seq: int, sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "host_id": host_id,
        "instance_id": instance,
        "sequence": seq,
        "collected_at": "2026-11-26T12:00:00+00:00",
        "agent_version": "0.1.0",
        "sections": sections,
    }


def _postgres_schema_url(base: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from fleetwatch.collector.storage.engine import normalize_url

    schema = f"fwbench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(normalize_url(base))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalize_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    return url.render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", choices=["agent", "ingest", "rollout", "metrics"])
    parser.add_argument(
        "--metrics-hosts",
        type=int,
        nargs="+",
        default=[10_000],
        help="fleet sizes to scrape /metrics at",
    )
    parser.add_argument("--rollout-hosts", type=int, default=10, help="lab hosts to deploy to")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FLEETWATCH_TEST_DATABASE_URL"),
        help="PostgreSQL URL for the ingest run on PostgreSQL",
    )
    parser.add_argument("--cycles", type=int, default=20, help="steady-state agent cycles")
    parser.add_argument("--hosts", type=int, default=64, help="hosts reporting at once")
    parser.add_argument("--per-host", type=int, default=10, help="full reports per host")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="collector worker processes to measure with",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="fleetwatch-bench-") as directory:
        tmp = Path(directory)
        if args.only in (None, "agent"):
            bench_agent(tmp, args.cycles)
        if args.only in (None, "ingest"):
            print(
                "collector ingest over HTTP (fleetwatch serve; load from 2 client processes "
                "on the same machine)"
            )
            for workers in args.workers:
                bench_ingest(
                    tmp,
                    "SQLite",
                    f"sqlite:///{tmp / f'ingest-{workers}.db'}",
                    args.hosts,
                    args.per_host,
                    workers,
                )
                if args.postgres:
                    url, drop = _postgres_schema_url(args.postgres)
                    try:
                        bench_ingest(tmp, "PostgreSQL", url, args.hosts, args.per_host, workers)
                    finally:
                        drop()
            if not args.postgres:
                print("  PostgreSQL: skipped (give --postgres URL or FLEETWATCH_TEST_DATABASE_URL)")
        if args.only in (None, "rollout"):
            bench_rollout(args.rollout_hosts)
        if args.only in (None, "metrics"):
            print("GET /metrics over HTTP (fleetwatch serve, 2 workers; a seeded fleet)")
            for hosts in args.metrics_hosts:
                bench_metrics(tmp, "SQLite", f"sqlite:///{tmp / f'metrics-{hosts}.db'}", hosts)
                if args.postgres:
                    url, drop = _postgres_schema_url(args.postgres)
                    try:
                        bench_metrics(tmp, "PostgreSQL", url, hosts)
                    finally:
                        drop()


if __name__ == "__main__":
    main()
