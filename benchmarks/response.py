"""The response's cost: a policy change that opens 2,000 findings (and their events), and a
report's ingest with and without waivers in force.

    python -m benchmarks.response [--postgres URL] [--hosts 500]

In process (the collector's service over a real database, no HTTP): what is measured is the
evaluation and the writes the lifecycle adds, not the web front.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, make_url, select, text

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.engine import normalize_url
from fleetwatch.collector.storage.tables import events
from fleetwatch.collector.storage.waivers import NewWaiver
from fleetwatch.schema import Report
from tests.helpers import make_report, ports_section

NARROW = '[defaults]\nallowed_ports = ["tcp/22"]\n[due_days]\nhigh = 7\n'
WIDE = '[defaults]\nallowed_ports = ["tcp/22", "tcp/8000-8010"]\n[due_days]\nhigh = 7\n'
PORTS = ports_section(*[("tcp", "0.0.0.0", p) for p in (22, 8001, 8002, 8003, 8004)])


def _event_count(svc: CollectorService) -> int:
    with svc.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def run(database_url: str, tmp: Path, hosts: int, waivers: int) -> None:
    policy = tmp / "policy.toml"
    policy.write_text(WIDE)
    svc = CollectorService(
        CollectorSettings(database_url=database_url, policy=policy, enroll_secret="s", data_dir=tmp)
    )
    svc.start()
    svc.housekeeper.stop()  # measured by hand here
    try:
        names = [f"h{n:04d}" for n in range(hosts)]
        now = datetime.now(UTC)
        for name in names:
            svc.identity.enroll(name, "s")
            body = make_report(name, 1, {"ports": PORTS}, collected_at=now)
            svc.ingestor.ingest(Report.model_validate(body), name, now)
        policy.write_text(NARROW)
        before = _event_count(svc)
        wall, cpu = time.perf_counter(), time.process_time()
        assert svc.housekeeper.follow_policy()
        svc.housekeeper.reevaluate()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        opened = _event_count(svc) - before
        print(
            f"policy change over {hosts} hosts: {opened} events written; "
            f"{wall:.2f} s wall, {cpu:.2f} s CPU "
            f"({cpu / max(opened, 1) * 1000:.2f} ms CPU per finding)"
        )
        for label, count in (("no waivers", 0), (f"{waivers} waivers", waivers)):
            for n in range(count):
                svc.casework.create_waiver(
                    NewWaiver("api", None, "host", names[n % hosts], "allowed_ports", "tcp/9*",
                              "bench", "bench", "bench", now, now + timedelta(days=30))
                )  # fmt: skip
            sequence = 2 if count == 0 else 3
            wall, cpu = time.perf_counter(), time.process_time()
            for name in names:
                at = datetime.now(UTC)
                body = make_report(name, sequence, {"ports": PORTS}, collected_at=at)
                svc.ingestor.ingest(Report.model_validate(body), name, at)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"one report per host, {label}: {wall / hosts * 1000:.2f} ms wall, "
                f"{cpu / hosts * 1000:.2f} ms CPU per report (4 open findings each)"
            )
    finally:
        svc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("FLEETWATCH_TEST_DATABASE_URL"))
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--waivers", type=int, default=200)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        print("-- SQLite")
        run(f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp), args.hosts, args.waivers)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(normalize_url(args.postgres))
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(normalize_url(args.postgres)).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                print("-- PostgreSQL")
                run(url.render_as_string(hide_password=False), Path(tmp), args.hosts, args.waivers)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
