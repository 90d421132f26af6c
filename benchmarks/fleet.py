"""A fleet over the real HTTP API: N enrolled hosts reporting at a target rate, as agents do.

    python -m benchmarks.fleet --hosts 10000 --rate 333 --duration 120 [--postgres URL]

What a real agent sends between two changes is not a hash-only report: load, memory and disk
figures move between any two collections, so every report carries a fresh ``resources``
section and names the other sections by hash. ``--full-share`` of the reports (5% by default)
carry changed packages and updates in full, as after an upgrade. Hosts share a few dozen
package lists, as fleets built from a few images do.

The load is open-loop: each report has a due time on a fixed schedule, and its latency counts
from that due time, so a collector that falls behind shows it in the latency instead of
silently lowering the offered rate. It prints the achieved rate, latency percentiles, errors
by kind, the collector's CPU per report (all its processes) and the database's, the
collector's RSS, and the database's growth per report and per host and day, table by table.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import queue
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from benchmarks.ingest_load import gz, section, synthetic_packages
from tests.helpers import BASE_REPORT, CollectorProcess, section_data

VARIANTS = 40  # distinct package lists in the fleet
PACKAGES = 1500
LIFTED = {
    "FLEETWATCH_HOST_RATE": "1000000",
    "FLEETWATCH_HOST_BURST": "1000000",
    "FLEETWATCH_ENROLL_RATE": "1000000",
    "FLEETWATCH_ENROLL_BURST": "1000000",
    "FLEETWATCH_LOG_LEVEL": "warning",
}


@dataclass
class Host:
    host_id: str
    token: str
    instance: str
    sequence: int
    variant: int


def _fixed_sections() -> dict[str, dict[str, Any]]:
    return {
        name: section(name, section_data(name))
        for name in ("system", "ports", "services", "checks")
    }


def _variants() -> list[dict[str, dict[str, Any]]]:
    """The package lists (and their updates) hosts of the fleet carry: a few, shared."""
    base = BASE_REPORT["sections"]["packages"]["data"]["packages"]
    updates = section("updates", section_data("updates"))
    return [
        {
            "packages": section(
                "packages",
                {"manager": "dpkg", "packages": synthetic_packages(base, PACKAGES, f"v{v}")},
            ),
            "updates": updates,
        }
        for v in range(VARIANTS)
    ]


def _resources(rng: random.Random) -> dict[str, Any]:
    data = section_data("resources")
    data["load_average"] = [round(rng.uniform(0, 4), 2) for _ in range(3)]
    data["memory"] = {**data["memory"], "available_bytes": rng.randrange(10**9, 2 * 10**10)}
    data["memory"]["percent"] = round(
        100 - data["memory"]["available_bytes"] * 100 / data["memory"]["total_bytes"], 1
    )
    return section("resources", data)


def _body(host: Host, sections: dict[str, Any]) -> tuple[bytes, bool]:
    return gz(
        {
            "schema_version": 1,
            "host_id": host.host_id,
            "instance_id": host.instance,
            "sequence": host.sequence,
            "collected_at": datetime.now(UTC).isoformat(),
            "agent_version": "0.1.0",
            "sections": sections,
        }
    )


class Poster:
    """One keep-alive connection per thread to the collector."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.local = threading.local()

    def post(self, path: str, token: str, body: tuple[bytes, bool]) -> tuple[int, float | None]:
        """The answer's status and its Retry-After, if it has one."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.parts.hostname or "", self.parts.port, timeout=120
            )
            self.local.conn = conn
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if body[1]:
            headers["Content-Encoding"] = "gzip"
        try:
            conn.request("POST", path, body=body[0], headers=headers)
            response = conn.getresponse()
            response.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            self.local.conn = None
        retry_after = response.getheader("retry-after")
        return response.status, float(retry_after) if retry_after else None


@dataclass
class Load:
    """What one load process sends: its hosts' reports, at its share of the rate."""

    url: str
    hosts: list[Host]
    rate: float
    duration: float
    full_share: float
    start_at: float
    seed: int
    retry: bool = True


def _sender(load: Load, results: Any) -> None:
    """One load process: sends its hosts' reports on schedule, puts its figures on ``results``."""
    url, hosts, rate, duration = load.url, load.hosts, load.rate, load.duration
    full_share, start_at = load.full_share, load.start_at
    rng = random.Random(load.seed)
    fixed = _fixed_sections()
    variants = _variants()
    poster = Poster(url)
    latencies: list[float] = []  # of the reports stored, from their first due time
    outcomes: Counter[str] = Counter()  # every answer, retries included
    lock = threading.Lock()
    due_queue: queue.Queue[tuple[float, Host, tuple[bytes, bool]] | None] = queue.Queue()
    retrying: set[threading.Timer] = set()

    def work() -> None:
        while (item := due_queue.get()) is not None:
            due, host, body = item
            retry_after = None
            try:
                status, retry_after = poster.post("/api/v1/report", host.token, body)
                kind = str(status)
            except Exception as exc:  # noqa: BLE001  (every failure is a figure here)
                kind = type(exc).__name__
            done = time.monotonic()
            with lock:
                outcomes[kind] += 1
                if kind == "200":
                    latencies.append(done - due)
                elif kind in {"429", "503"} and load.retry:
                    # as the agent does: keep the report, send it again after Retry-After
                    timer = threading.Timer(retry_after or 5.0, _requeue, (item,))
                    retrying.add(timer)
                    timer.start()

    def _requeue(item: tuple[float, Host, tuple[bytes, bool]]) -> None:
        with lock:
            retrying.difference_update({t for t in retrying if not t.is_alive()})
        due_queue.put(item)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(64)]
    for thread in threads:
        thread.start()
    interval = 1 / rate
    count = int(duration * rate)
    while time.monotonic() < start_at:
        time.sleep(0.01)
    for n in range(count):
        due = start_at + n * interval
        host = hosts[n % len(hosts)]
        host.sequence += 1
        if rng.random() < full_share:
            host.variant = rng.randrange(VARIANTS)
            changed = variants[host.variant]
            sections = {**{k: {"hash": v["hash"]} for k, v in fixed.items()}, **changed}
        else:
            changed = variants[host.variant]
            sections = {k: {"hash": v["hash"]} for k, v in {**fixed, **changed}.items()}
        sections["resources"] = _resources(rng)
        body = _body(host, sections)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due_queue.put((due, host, body))
    # what was refused is sent again after its Retry-After: wait for those to be answered
    while True:
        time.sleep(0.5)
        with lock:
            pending = any(t.is_alive() for t in retrying)
        if not pending and due_queue.empty():
            break
    for _ in threads:
        due_queue.put(None)
    for thread in threads:
        thread.join()
    results.put((latencies, dict(outcomes), count))


def _tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def _postgres_cpu() -> float:
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] and proc.info["name"].startswith("postgres"):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def _rss_mb(pid: int) -> float:
    parent = psutil.Process(pid)
    rss: int = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    return rss / 2**20


def _table_sizes(database_url: str) -> dict[str, int]:
    """Bytes per table (with its indexes) in the collector's database."""
    from sqlalchemy import create_engine, text

    from fleetwatch.collector.storage.engine import normalize_url

    url = normalize_url(database_url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                rows = conn.execute(
                    text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
                ).all()
            else:
                rows = conn.execute(
                    text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
                    )
                ).all()
    finally:
        engine.dispose()
    return {str(name): int(size) for name, size in rows}


def _enroll_all(collector: CollectorProcess, count: int) -> list[Host]:
    session = requests.Session()

    def enroll(n: int) -> Host:
        host_id = f"fleet-{n:06d}.sim"
        response = session.post(
            collector.url + "/api/v1/enroll",
            json={"host_id": host_id, "enroll_secret": collector.enroll_secret},
            timeout=60,
        )
        response.raise_for_status()
        return Host(host_id, response.json()["token"], uuid.uuid4().hex, 0, n % VARIANTS)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(enroll, range(count)))


def _first_reports(collector: CollectorProcess, hosts: list[Host]) -> None:
    """Each host's first report, in full: what later reports name by hash."""
    fixed = _fixed_sections()
    variants = _variants()
    rng = random.Random(1)
    poster = Poster(collector.url)

    def send(host: Host) -> None:
        host.sequence += 1
        sections = {**fixed, **variants[host.variant], "resources": _resources(rng)}
        body = _body(host, sections)
        status, retry_after = poster.post("/api/v1/report", host.token, body)
        while status in {429, 503}:  # as the agent does: again after Retry-After
            time.sleep(retry_after or 5.0)
            status, retry_after = poster.post("/api/v1/report", host.token, body)
        if status != 200:
            msg = f"first report of {host.host_id}: HTTP {status}"
            raise RuntimeError(msg)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, hosts))


def run(args: argparse.Namespace, tmp: Path, database_url: str, label: str) -> None:
    collector = CollectorProcess(
        tmp, database_url, extra_env={**LIFTED, "FLEETWATCH_WORKERS": str(args.workers)}
    ).start(timeout=120)
    assert collector.process is not None
    try:
        started = time.monotonic()
        hosts = _enroll_all(collector, args.hosts)
        enrolled = time.monotonic() - started
        started = time.monotonic()
        _first_reports(collector, hosts)
        first = time.monotonic() - started
        before = _table_sizes(database_url)
        cpu_before, db_before = _tree_cpu([collector.process.pid]), _postgres_cpu()
        results: Any = multiprocessing.Queue()
        start_at = time.monotonic() + 2
        shards = [hosts[i :: args.senders] for i in range(args.senders)]
        loads = [
            Load(collector.url, shard, args.rate / args.senders, args.duration,
                 args.full_share, start_at, i)
            for i, shard in enumerate(shards)
        ]  # fmt: skip
        procs = [multiprocessing.Process(target=_sender, args=(load, results)) for load in loads]
        for proc in procs:
            proc.start()
        gathered = [results.get() for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.monotonic() - start_at
        cpu = _tree_cpu([collector.process.pid]) - cpu_before
        db_cpu = _postgres_cpu() - db_before if not database_url.startswith("sqlite") else 0.0
        rss = _rss_mb(collector.process.pid)
        after = _table_sizes(database_url)
    finally:
        collector.stop()
    latencies = sorted(x for lat, _, _ in gathered for x in lat)
    outcomes: Counter[str] = Counter()
    for _, counts, _ in gathered:
        outcomes.update(counts)
    ok = outcomes.get("200", 0)
    sent = sum(count for _, _, count in gathered)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    print(
        f"{label}: {args.hosts} hosts, {args.workers} collector workers, "
        f"{args.senders} load processes"
    )
    print(f"  enrolled in {enrolled:.0f} s, first full reports in {first:.0f} s")
    print(
        f"  offered {args.rate:.0f}/s for {args.duration:.0f} s ({args.full_share:.0%} full): "
        f"achieved {ok / elapsed:.0f}/s stored, {sent} reports, {sent - ok} not stored in the "
        "end (refused reports are sent again after their Retry-After, as agents do)"
    )
    print(
        "  latency of stored reports, from first due time: "
        f"p50 {pct(0.5) * 1000:.0f} ms, p90 {pct(0.9) * 1000:.0f} ms, "
        f"p99 {pct(0.99) * 1000:.0f} ms, max {pct(1.0) * 1000:.0f} ms "
        f"(mean {statistics.fmean(latencies) * 1000 if latencies else 0:.0f} ms)"
    )
    print(f"  outcomes: {dict(sorted(outcomes.items()))}")
    print(
        f"  collector CPU {cpu / max(sent, 1) * 1000:.2f} ms a report"
        + (f", PostgreSQL CPU {db_cpu / max(sent, 1) * 1000:.2f} ms a report" if db_cpu else "")
        + f"; collector RSS {rss:.0f} MB (all processes)"
    )
    grown = {t: after.get(t, 0) - before.get(t, 0) for t in sorted(set(after) | set(before))}
    total = sum(grown.values())
    per_day = 86400 / args.interval
    print(
        f"  database growth {total / max(sent, 1):.0f} B a report; at one report every "
        f"{args.interval:.0f} s: {total / max(sent, 1) * per_day / 1024:.1f} KB a host a day"
    )
    for table, size in grown.items():
        if size:
            print(
                f"    {table}: {size / max(sent, 1):.0f} B a report, "
                f"{size / max(sent, 1) * per_day / 1024:.1f} KB a host a day"
            )
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100, help="reports a second offered")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--full-share", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2, help="collector worker processes")
    parser.add_argument("--senders", type=int, default=2, help="load processes")
    parser.add_argument(
        "--interval", type=float, default=300, help="agent interval, for per-day figures"
    )
    parser.add_argument("--postgres", help="PostgreSQL URL (a schema of its own is made)")
    args = parser.parse_args()
    from benchmarks.__main__ import _postgres_schema_url, machine

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="fleetwatch-fleet-") as directory:
        tmp = Path(directory)
        if args.postgres:
            url, drop = _postgres_schema_url(args.postgres)
            try:
                run(args, tmp, url, "PostgreSQL")
            finally:
                drop()
        else:
            run(args, tmp, f"sqlite:///{tmp / 'fleet.db'}", "SQLite")


if __name__ == "__main__":
    main()
