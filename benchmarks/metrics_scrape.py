"""How long a scrape of /metrics takes on a large fleet.

A database is seeded through the storage layer (hosts enrolled and reporting, open and
resolved findings of several rules and severities, over 95 units), then the real
`fleetwatch serve` (2 workers) is scraped over HTTP on loopback: with the fleet figures read
at every scrape (``metrics_cache_seconds=0``: the database's share) and with the default
cache (what a Prometheus scraping every 15 s sees in between).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import requests

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.findings import NewFinding
from fleetwatch.collector.storage.hosts import HostChange
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.web.metrics import read_fleet_figures
from tests.helpers import CollectorProcess

if TYPE_CHECKING:
    from pathlib import Path

UNITS = 95
RULES = [
    ("allowed_ports", "high"),
    ("security_updates", "critical"),
    ("pending_updates", "medium"),
    ("reboot_required", "medium"),
    ("disk_usage", "low"),
    ("forbidden_packages", "critical"),
]
SCRAPES = 15


def seed(database_url: str, hosts: int, rng: random.Random) -> int:
    """Enroll ``hosts`` hosts with reports and findings; returns the open findings made."""
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(engine)
    now = datetime.now(UTC)
    opened = 0
    batch = 2000
    for start in range(0, hosts, batch):
        ids = [f"host-{i:06d}" for i in range(start, min(start + batch, hosts))]
        with store.write() as conn:
            for host_id in ids:
                store.hosts.create(conn, host_id, f"unit-{rng.randrange(UNITS):02d}", now)
            rows = store.hosts.get_many(conn, ids)
            changes = []
            new: list[NewFinding] = []
            for host_id in ids:
                kind = rng.random()
                if kind < 0.05:
                    continue  # enrolled, never reported
                age = timedelta(hours=3) if kind < 0.15 else timedelta(minutes=rng.randrange(10))
                seen = now - age
                row = rows[host_id]
                changes.append(
                    HostChange(
                        row,
                        replace(
                            row,
                            instance_id="a" * 32,
                            last_sequence=1,
                            last_collected_at=seen,
                            last_received_at=seen,
                            agent_version="0.1.0",
                        ),
                    )
                )
                if rng.random() < 0.35:
                    for rule, severity in rng.sample(RULES, rng.randrange(1, 4)):
                        for n in range(rng.randrange(1, 4)):
                            first = now - timedelta(days=rng.randrange(30), minutes=n)
                            new.append(
                                NewFinding(host_id, rule, f"k{n}", severity, "seeded", first, seen)
                            )
            store.hosts.update(conn, changes)
            store.findings.add(conn, new)
            opened += len(new)
    engine.dispose()
    return opened


def _scrapes(collector: CollectorProcess, count: int) -> list[float]:
    times = []
    headers = {"Authorization": f"Bearer {collector.admin_token}"}
    for _ in range(count):
        started = time.perf_counter()
        response = requests.get(collector.url + "/metrics", headers=headers, timeout=120)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def _in_process(tmp: Path, database_url: str) -> None:
    """The fleet figures read in this process: wall and CPU time (the CPU time is the
    steadier figure on a shared machine; on PostgreSQL the server's share is not in it)."""
    settings = CollectorSettings(database_url=database_url, data_dir=tmp, metrics_dir=None)
    svc = CollectorService(settings)
    try:
        svc.fleet_recorder.place()  # as `serve` does at start: the hosts counted by unit
        read_fleet_figures(svc)  # connections
        walls, cpus = [], []
        for _ in range(5):
            wall, cpu = time.perf_counter(), time.process_time()
            read_fleet_figures(svc)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    finally:
        svc.engine.dispose()
    print(
        f"    fleet figures read in process: median {statistics.median(walls) * 1000:.0f} ms "
        f"wall, {statistics.median(cpus) * 1000:.0f} ms CPU (5 reads)"
    )


def bench_metrics(tmp: Path, label: str, database_url: str, hosts: int) -> None:
    rng = random.Random(12)
    started = time.perf_counter()
    opened = seed(database_url, hosts, rng)
    print(
        f"  {label}, {hosts:,} hosts ({opened:,} open findings), seeded in "
        f"{time.perf_counter() - started:.0f} s"
    )
    _in_process(tmp, database_url)
    for cache in ("0", "15"):
        collector = CollectorProcess(
            tmp,
            database_url,
            extra_env={"FLEETWATCH_WORKERS": "2", "FLEETWATCH_METRICS_CACHE_SECONDS": cache},
        ).start()
        try:
            _scrapes(collector, 2)  # each worker's first: imports, connections
            times = sorted(_scrapes(collector, SCRAPES))
        finally:
            collector.stop()
        load = os.getloadavg()
        what = "read at every scrape" if cache == "0" else f"kept {cache} s"
        print(
            f"    fleet figures {what}: scrape median {statistics.median(times) * 1000:.0f} ms, "
            f"p90 {times[int(len(times) * 0.9)] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms "
            f"({SCRAPES} scrapes; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
        )
