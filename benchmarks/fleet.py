"""A fleet over the real HTTP API: N enrolled hosts reporting at a target rate, as agents do.

    python -m benchmarks.fleet --hosts 10000 --rate 333 --duration 120 [--postgres URL]

What a real agent sends between two changes is not a hash-only report: load, memory and disk
figures move between any two collections, so every report carries a fresh ``resources``
section and names the other sections by hash. ``--full-share`` of the reports (5% by default)
carry changed packages and updates in full, as after an upgrade. Hosts share a few dozen
package lists, as fleets built from a few images do.

The set-up enrolls each host over ``POST /api/v1/enroll`` and sends it a first report in full,
from ``--setup-processes`` processes (4 by default, 8 connections each); the collector's
enrollment and per-host rate limits are lifted for the benchmark. At 100,000 hosts this is
most of the time, so a set-up can be kept and reused:

    python -m benchmarks.fleet --hosts 100000 --postgres URL --keep DIR --duration 0
    python -m benchmarks.fleet --reuse DIR --rate 333 --duration 120

``--keep DIR`` keeps the fleet in DIR: the hosts (tokens, instances, sequences) in
``DIR/hosts.jsonl`` and the database, with ``--postgres`` a database of its own next to the
URL's (``--database``, ``bench_fleet<hosts>`` by default), without it ``DIR/fleet.db``. The
hosts file grows as hosts are set up: the same ``--keep`` command again goes on where a
set-up stopped. ``--reuse DIR`` runs the load on a copy of the kept database (PostgreSQL's
``CREATE DATABASE ... TEMPLATE``, SQLite's backup), made afresh for each run and dropped
after it (``--keep-copy`` leaves it), so every run starts from the same state. The collector
applies newer migrations to the copy when it starts; the kept database is never written
after its set-up.

The load is open-loop: each report has a due time on a fixed schedule, and its latency counts
from that due time, so a collector that falls behind shows it in the latency instead of
silently lowering the offered rate. It prints the achieved rate, latency percentiles, errors
by kind, CPU per report of the collector (all its processes), of PostgreSQL (this database's
backends, and the whole server) and of the load generator, how the machine's cores were
shared between them and everything else, the collector's RSS, the load average before and
after, and the database's growth per report and per host and day, table by table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks import fleet_hosts
from benchmarks.fleet_keep import KeptFleet
from fleetwatch.collector.storage.engine import normalize_url
from tests.helpers import CollectorProcess

if TYPE_CHECKING:
    from benchmarks.fleet_hosts import Host

LIFTED = {
    "FLEETWATCH_HOST_RATE": "1000000",
    "FLEETWATCH_HOST_BURST": "1000000",
    "FLEETWATCH_ENROLL_RATE": "1000000",
    "FLEETWATCH_ENROLL_BURST": "1000000",
    "FLEETWATCH_LOG_LEVEL": "warning",
    # housekeeping rounds at the collector's default pace, not the tests' half second: a
    # round's work over the whole fleet is part of what a report costs
    "FLEETWATCH_POLICY_CHECK_INTERVAL": "5",
}


@dataclass
class Load:
    """What one load process sends: its hosts' reports, at its share of the rate."""

    url: str
    hosts: list[Host]
    rate: float
    duration: float
    full_share: float
    start_at: float  # time.monotonic() of the first report's due time
    start_wall: float  # time.time() then: what the reports' collected_at count from
    seed: int
    give_up: float  # seconds after the load's end when what is still refused is given up
    retry: bool = True


def _prepare(load: Load) -> list[tuple[float, Host, tuple[bytes, bool]]]:
    """Every report this load process will send, built ahead: (due time, host, body).

    Agents build their reports on their own hosts: building them here, on the collector's
    cores, during the load would charge the collector's machine with work a real fleet does
    not put on it (a full report's JSON and gzip take 10-25 ms of CPU here).
    """
    rng = random.Random(load.seed)
    fixed = fleet_hosts.fixed_sections()
    variants = fleet_hosts.variants()
    interval = 1 / load.rate
    plan = []
    for n in range(int(load.duration * load.rate)):
        host = load.hosts[n % len(load.hosts)]
        host.sequence += 1
        if rng.random() < load.full_share:
            host.variant = rng.randrange(fleet_hosts.VARIANTS)
            changed = variants[host.variant]
            sections = {**{k: {"hash": v["hash"]} for k, v in fixed.items()}, **changed}
        else:
            changed = variants[host.variant]
            sections = {k: {"hash": v["hash"]} for k, v in {**fixed, **changed}.items()}
        sections["resources"] = fleet_hosts.resources(rng)
        collected_at = datetime.fromtimestamp(load.start_wall + n * interval, UTC)
        plan.append(
            (load.start_at + n * interval, host, fleet_hosts.body(host, sections, collected_at))
        )
    return plan


def _sender(load: Load, ready: Any, results: Any) -> None:
    """One load process: builds its hosts' reports, says so on ``ready``, sends them on
    schedule, puts its figures on ``results``."""
    started = time.process_time()
    plan = _prepare(load)
    ready.put(time.process_time() - started)
    url, start_at = load.url, load.start_at
    poster = fleet_hosts.Poster(url)
    cpu_started = time.process_time()
    latencies: list[float] = []  # of the reports stored, from their first due time
    outcomes: Counter[str] = Counter()  # every answer, retries included
    lock = threading.Lock()
    due_queue: queue.Queue[tuple[float, Host, tuple[bytes, bool]] | None] = queue.Queue()
    retrying: set[threading.Timer] = set()
    give_up_at = start_at + load.duration + load.give_up

    def work() -> None:
        while (item := due_queue.get()) is not None:
            due, host, body = item
            if time.monotonic() > give_up_at:
                with lock:
                    outcomes["given up"] += 1
                continue
            retry_after = None
            try:
                status, retry_after, _ = poster.post("/api/v1/report", host.token, body)
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
            if time.monotonic() > give_up_at:
                outcomes["given up"] += 1
                return
        due_queue.put(item)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(64)]
    for thread in threads:
        thread.start()
    while time.monotonic() < start_at:
        time.sleep(0.01)
    for due, host, body in plan:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due_queue.put((due, host, body))
    # what was refused is sent again after its Retry-After: wait for those to be answered
    while True:
        time.sleep(0.5)
        with lock:
            pending = any(t.is_alive() for t in retrying)
        if (not pending or time.monotonic() > give_up_at) and due_queue.empty():
            break
    with lock:
        for timer in retrying:
            if timer.is_alive():
                timer.cancel()
                outcomes["given up"] += 1
    for _ in threads:
        due_queue.put(None)
    for thread in threads:
        thread.join()
    results.put((latencies, dict(outcomes), len(plan), time.process_time() - cpu_started))


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


class PostgresCpu:
    """CPU of the PostgreSQL processes serving one database, and of the whole server.

    Processes are looked at once a second (backends in ``pg_stat_activity``), so those started
    during the run are counted too; what a process that ended between two looks spent since
    the last one is missed. The whole server's figure includes other databases' work.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(normalize_url(database_url))
        self.database = url.database
        self.engine = create_engine(url)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.ours: set[int] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> PostgresCpu:
        self.started = time.time()
        self._sample()
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.stopping.wait(1):
            self._sample()

    def _sample(self) -> None:
        with self.engine.connect() as conn:
            self.ours.update(
                conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.database},
                ).scalars()
            )
        for proc in psutil.process_iter(["name"]):
            if not (proc.info["name"] or "").startswith("postgres"):
                continue
            try:
                times = proc.cpu_times()
                born = proc.create_time()
            except psutil.Error:
                continue
            used = times.user + times.system
            self.first.setdefault(proc.pid, used if born < self.started else 0.0)
            self.last[proc.pid] = used

    def stop(self) -> tuple[float, float]:
        """CPU-seconds of this database's backends, and of all of PostgreSQL."""
        self.stopping.set()
        self.thread.join()
        self._sample()
        self.engine.dispose()
        spent = {pid: self.last[pid] - self.first[pid] for pid in self.last}
        return sum(spent.get(pid, 0.0) for pid in self.ours), sum(spent.values())


def _machine_cpu() -> tuple[float, float]:
    """CPU-seconds the machine spent busy and idle so far (every core)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle, idle


def _uptime() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _rss_mb(pid: int) -> float:
    parent = psutil.Process(pid)
    rss: int = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    return rss / 2**20


def _table_sizes(database_url: str) -> dict[str, int]:
    """Bytes per table (with its indexes) in the collector's database."""
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


def _table_rows(database_url: str) -> dict[str, int]:
    """Rows per table: what stays when PostgreSQL's dead row versions are vacuumed away."""
    url = normalize_url(database_url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                names = conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table'")
                ).scalars()
                return {
                    str(name): int(
                        conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                    )
                    for name in list(names)
                }
            rows = conn.execute(
                text(
                    "SELECT relname, n_tup_ins - n_tup_del FROM pg_stat_user_tables "
                    "WHERE schemaname = current_schema()"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(name): int(count) for name, count in rows}


def _collector(tmp: Path, database_url: str, args: argparse.Namespace) -> CollectorProcess:
    return CollectorProcess(
        tmp, database_url, extra_env={**LIFTED, "FLEETWATCH_WORKERS": str(args.workers)}
    ).start(timeout=args.start_timeout)


def set_up(
    args: argparse.Namespace, collector: CollectorProcess, hosts_file: Path | None = None
) -> list[Host]:
    """Enroll the fleet and send each host's first full report, over the API."""
    print(f"set-up of {args.hosts} hosts; load average before: {_uptime()}", flush=True)
    assert collector.process is not None
    busy_before, _ = _machine_cpu()
    cpu_before = _tree_cpu([collector.process.pid])
    database_url = collector.env["FLEETWATCH_DATABASE_URL"]
    postgres = None if database_url.startswith("sqlite") else PostgresCpu(database_url).start()
    hosts, outcomes, seconds = fleet_hosts.set_up(
        collector.url, collector.enroll_secret, args.hosts, args.setup_processes, hosts_file
    )
    busy = _machine_cpu()[0] - busy_before
    cpu = _tree_cpu([collector.process.pid]) - cpu_before
    db_cpu = postgres.stop()[0] if postgres else 0.0
    made = max(len(hosts), 1)
    print(
        f"  {len(hosts)} hosts enrolled and sent a first full report in {seconds:.0f} s "
        f"({len(hosts) / max(seconds, 1e-9):.0f} hosts a second from {args.setup_processes} "
        f"processes); collector {cpu / made * 1000:.1f} ms CPU a host"
        + (f", PostgreSQL {db_cpu / made * 1000:.1f} ms" if postgres else "")
        + f"; the machine {busy / seconds:.2f} cores busy; outcomes {dict(outcomes)}; "
        f"load average after: {_uptime()}",
    )
    return hosts


def steady(
    args: argparse.Namespace, collector: CollectorProcess, database_url: str, hosts: list[Host]
) -> None:
    """Send reports at the offered rate for the duration and print what it cost."""
    assert collector.process is not None
    label = "SQLite" if database_url.startswith("sqlite") else "PostgreSQL"
    uptime_before = _uptime()
    before, rows_before = _table_sizes(database_url), _table_rows(database_url)
    results: Any = multiprocessing.Queue()
    ready: Any = multiprocessing.Queue()
    # the senders build their reports first (about 10 ms a full one, 0.2 ms another): the
    # load starts once they have, by this estimate with room to spare
    each = args.rate * args.duration / args.senders
    lead = 3 + 2 * each * (args.full_share * 0.01 + 0.0002)
    start_at, start_wall = time.monotonic() + lead, time.time() + lead
    shards = [hosts[i :: args.senders] for i in range(args.senders)]
    loads = [
        Load(collector.url, shard, args.rate / args.senders, args.duration,
             args.full_share, start_at, start_wall, i, args.give_up)
        for i, shard in enumerate(shards)
    ]  # fmt: skip
    procs = [multiprocessing.Process(target=_sender, args=(load, ready, results)) for load in loads]
    for proc in procs:
        proc.start()
    prepared = [ready.get() for _ in procs]
    late = time.monotonic() - start_at
    print(
        f"  reports built ahead in {max(prepared):.0f} s of CPU a load process, as agents build "
        "theirs on their own hosts (not counted below)"
        + (f"; {late:.1f} s LATE: the first reports' latency counts it" if late > 0 else ""),
        flush=True,
    )
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu_before = _tree_cpu([collector.process.pid])
    postgres = None if label == "SQLite" else PostgresCpu(database_url).start()
    own_before = time.process_time()
    busy_before, idle_before = _machine_cpu()
    gathered = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - start_at
    busy_after, idle_after = _machine_cpu()
    cpu = _tree_cpu([collector.process.pid]) - cpu_before
    db_cpu, server_cpu = postgres.stop() if postgres else (0.0, 0.0)
    load_cpu = sum(g[3] for g in gathered) + time.process_time() - own_before
    rss = _rss_mb(collector.process.pid)
    after = _table_sizes(database_url)
    time.sleep(1)  # PostgreSQL's backends report their row counts within a second
    rows_after = _table_rows(database_url)
    latencies = sorted(x for g in gathered for x in g[0])
    outcomes: Counter[str] = Counter()
    for g in gathered:
        outcomes.update(g[1])
    ok = outcomes.get("200", 0)
    sent = sum(g[2] for g in gathered)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    print(
        f"{label}: {len(hosts)} hosts, {args.workers} collector workers, "
        f"{args.senders} load processes; load average before: {uptime_before}"
    )
    print(
        f"  offered {args.rate:.0f}/s for {args.duration:.0f} s ({args.full_share:.0%} full): "
        f"achieved {ok / elapsed:.0f}/s stored, {sent} reports, {sent - ok} not stored in the "
        f"end (refused reports are sent again after their Retry-After, as agents do, until "
        f"{args.give_up:.0f} s after the load's end)"
    )
    print(
        "  latency of stored reports, from first due time: "
        f"p50 {pct(0.5) * 1000:.0f} ms, p90 {pct(0.9) * 1000:.0f} ms, "
        f"p99 {pct(0.99) * 1000:.0f} ms, max {pct(1.0) * 1000:.0f} ms "
        f"(mean {statistics.fmean(latencies) * 1000 if latencies else 0:.0f} ms)"
    )
    print(f"  outcomes (every answer, retries included): {dict(sorted(outcomes.items()))}")
    per = 1000 / max(ok, 1)
    print(
        "  CPU a stored report (refusals and retries included): "
        f"collector {cpu * per:.2f} ms (all its processes)"
        + (
            f", PostgreSQL {db_cpu * per:.2f} ms (this database's backends; "
            f"{server_cpu * per:.2f} ms the whole server, other databases included)"
            if postgres
            else ""
        )
        + f", load generator {load_cpu * per:.2f} ms; collector RSS {rss:.0f} MB (all processes)"
    )
    busy, idle = busy_after - busy_before, idle_after - idle_before
    others = busy - cpu - server_cpu - load_cpu
    print(
        f"  the {os.cpu_count()} cores over {elapsed:.0f} s, in cores busy: collector "
        f"{cpu / elapsed:.2f}, PostgreSQL {db_cpu / elapsed:.2f} (the whole server "
        f"{server_cpu / elapsed:.2f}), load generator {load_cpu / elapsed:.2f}, everything "
        f"else on the machine {others / elapsed:.2f}, idle {idle / elapsed:.2f}"
    )
    grown = {t: after.get(t, 0) - before.get(t, 0) for t in sorted(set(after) | set(before))}
    total = sum(grown.values())
    per_day = 86400 / args.interval
    print(
        f"  database growth {total / max(ok, 1):.0f} B a stored report; at one report every "
        f"{args.interval:.0f} s: {total / max(ok, 1) * per_day / 1024:.1f} KB a host a day"
    )
    for table, size in grown.items():
        if size:
            print(
                f"    {table}: {size / max(ok, 1):.0f} B a report, "
                f"{size / max(ok, 1) * per_day / 1024:.1f} KB a host a day"
            )
    added = {t: rows_after.get(t, 0) - rows_before.get(t, 0) for t in sorted(rows_after)}
    print(
        "  rows added (PostgreSQL's size growth above includes dead row versions, which "
        "vacuum makes room of again): "
        + (
            ", ".join(
                f"{table} {count / max(ok, 1) * per_day:.1f} a host a day"
                for table, count in added.items()
                if count
            )
            or "none"
        )
    )
    print(f"  load average after: {_uptime()}", flush=True)


def on_a_copy(args: argparse.Namespace, tmp: Path, kept: KeptFleet) -> None:
    """The steady phase on a fresh copy of a kept fleet's database."""
    hosts, _ = fleet_hosts.read_hosts(kept.hosts_file)
    started = time.monotonic()
    url, drop = kept.copy()
    print(f"a copy of the kept database made in {time.monotonic() - started:.0f} s", flush=True)
    try:
        started = time.monotonic()
        collector = _collector(tmp, url, args)
        print(f"collector started (migrated) in {time.monotonic() - started:.0f} s", flush=True)
        try:
            steady(args, collector, url, hosts)
        finally:
            collector.stop()
    finally:
        if args.keep_copy:
            print(f"the run's copy is kept: {url}")
        else:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100, help="reports a second offered")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--full-share", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2, help="collector worker processes")
    parser.add_argument("--senders", type=int, default=2, help="load processes")
    parser.add_argument(
        "--setup-processes", type=int, default=4, help="processes enrolling the fleet"
    )
    parser.add_argument(
        "--give-up",
        type=float,
        default=120,
        help="seconds after the load's end when reports still refused are given up",
    )
    parser.add_argument(
        "--interval", type=float, default=300, help="agent interval, for per-day figures"
    )
    parser.add_argument("--postgres", help="PostgreSQL URL (a schema of its own is made)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the enrolled fleet in DIR for --reuse"
    )
    parser.add_argument(
        "--database",
        help="with --keep and --postgres: the kept database's name (bench_fleet<hosts>)",
    )
    parser.add_argument(
        "--reuse", type=Path, metavar="DIR", help="run on a copy of the fleet kept in DIR"
    )
    parser.add_argument(
        "--keep-copy", action="store_true", help="leave the run's copy of a kept database"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=1800, help="seconds the collector may take to start"
    )
    args = parser.parse_args()
    from benchmarks.__main__ import _postgres_schema_url, machine

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="fleetwatch-fleet-") as directory:
        tmp = Path(directory)
        if args.reuse:
            kept = KeptFleet.open(args.reuse)
            if not kept.complete:
                print(
                    f"the set-up of {args.reuse} has not finished: running on the hosts set up "
                    "so far (--keep the same directory again to go on setting it up)"
                )
            on_a_copy(args, tmp, kept)
        elif args.keep:
            name = args.database or f"bench_fleet{args.hosts}"
            kept = KeptFleet.make(args.keep, args.hosts, args.postgres, name)
            collector = _collector(tmp, kept.database_url, args)
            try:
                set_up(args, collector, kept.hosts_file)
            finally:
                collector.stop()
            kept.complete = True
            kept.save()
            print(f"fleet kept in {args.keep} (database {kept.database_url})", flush=True)
            if args.duration > 0:
                on_a_copy(args, tmp, kept)
        else:
            if args.postgres:
                url, drop = _postgres_schema_url(args.postgres)
            else:
                url, drop = f"sqlite:///{tmp / 'fleet.db'}", lambda: None
            try:
                collector = _collector(tmp, url, args)
                try:
                    steady(args, collector, url, set_up(args, collector))
                finally:
                    collector.stop()
            finally:
                drop()


if __name__ == "__main__":
    main()
