"""The dashboard at scale: seed a fleet, then time the pages and explain their queries.

    python -m benchmarks.dashboard seed --hosts 100000 --database URL --dir DIR
    python -m benchmarks.dashboard measure --database URL --dir DIR

``seed`` writes a policy of ``--hosts`` hosts in 95 units (DIR/policy.toml) and, through the
storage layer in bulk, their rows: 97 % enrolled and reporting (2 % of those stale), three
reports each, open findings of the registry's rules (about three a host) with resolved ones
behind them, hosts placed by the policy, and 90 days of synthetic daily and 7 days of hourly
snapshots (the counts of today, drifting back in time; the history a fleet would have).

``measure`` builds the collector application on that database and policy, signs in, and
times the server-side render of the overview and the host list (the first page, a filtered
page, a page far into the list), each the median of several requests, with no network in
between; then runs EXPLAIN on every statement those pages sent and says whether any touches
the reports table.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

from fleetwatch.collector.compliance.placement import FleetRecorder, default_age
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.compliance.rules import REGISTRY
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.findings import FindingChange, NewFinding
from fleetwatch.collector.storage.fleet_view import FleetView, Scope
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import fleet_snapshots, hosts, reports

UNITS = 95
GROUPS = ("web", "db", "mail", "dns", "file", "proxy")
BATCH = 5000
ADMIN = "benchmark-admin-token"


def _policy(count: int) -> str:
    lines = ["[defaults]", 'allowed_ports = ["tcp/22"]', "max_report_age = 3600", ""]
    lines += [f"[groups.{g}]" for g in GROUPS]
    lines.append("")
    for i in range(count):
        lines.append(f'[hosts."h{i:06d}.unit{i % UNITS:02d}"]')
        lines.append(f'unit = "unit{i % UNITS:02d}"')
        lines.append(f'groups = ["{GROUPS[i % len(GROUPS)]}"]')
    return "\n".join(lines) + "\n"


def seed(count: int, url: str, directory: Path) -> None:
    rng = random.Random(12)
    directory.mkdir(parents=True, exist_ok=True)
    policy_path = directory / "policy.toml"
    policy_path.write_text(_policy(count))
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    now = datetime.now(UTC)
    severity_of = {r.id: r.severity for r in REGISTRY}
    rules = sorted(severity_of)
    host_ids = [f"h{i:06d}.unit{i % UNITS:02d}" for i in range(count)]
    started = time.monotonic()
    report_id = 0
    for start in range(0, count, BATCH):
        chunk = host_ids[start : start + BATCH]
        host_rows, report_rows, new_findings = [], [], []
        for host_id in chunk:
            if rng.random() < 0.03:
                continue
            age = timedelta(seconds=rng.randint(60, 3000))
            if rng.random() < 0.02:
                age = timedelta(hours=rng.randint(2, 200))
            seen = now - age
            host_rows.append(
                {
                    "host_id": host_id,
                    "unit": host_id.split(".")[1],
                    "enrolled_at": now - timedelta(days=120),
                    "instance_id": "a" * 32,
                    "last_sequence": 3,
                    "last_collected_at": seen,
                    "last_received_at": seen + timedelta(seconds=1),
                    "agent_version": rng.choice(["0.1.0", "0.1.0", "0.2.0"]),
                    "sections": {},
                    "conditions": {},
                    "dropped_total": rng.choice([0, 0, 0, 1, 4]),
                }
            )
            for sequence in (1, 2, 3):
                report_id += 1
                report_rows.append(
                    {
                        "host_id": host_id,
                        "instance_id": "a" * 32,
                        "sequence": sequence,
                        "collected_at": seen - timedelta(minutes=15 * (3 - sequence)),
                        "received_at": seen - timedelta(minutes=15 * (3 - sequence)),
                        "agent_version": "0.1.0",
                        "sections": {},
                        "errors": {},
                        "missing": [],
                        "dropped": 0,
                    }
                )
            for n in range(rng.choice([0, 0, 1, 2, 3, 4, 6, 9])):
                rule = rng.choice(rules)
                first = now - timedelta(days=rng.randint(0, 60))
                new_findings.append(
                    NewFinding(
                        host_id=host_id,
                        rule=rule,
                        key=f"subject-{n}",
                        severity=severity_of[rule],
                        detail=f"{rule} found on {host_id} (synthetic)",
                        first_seen=first,
                        last_seen=seen,
                    )
                )
        with store.write() as conn:
            if host_rows:
                conn.execute(insert(hosts), host_rows)
                conn.execute(insert(reports), report_rows)
            store.findings.add(conn, new_findings)
        print(f"  {start + len(chunk)} hosts", end="\r", flush=True)
    # a quarter of the findings resolved: the history the findings page and host page show
    with store.write() as conn:
        ids = [i for (i,) in conn.execute(text("SELECT id FROM findings"))]
        resolved = rng.sample(ids, len(ids) // 4)
        store.findings.change(
            conn,
            [FindingChange(i, "medium", "resolved (synthetic)", now, now) for i in resolved],
        )
    source = PolicySource(policy_path)
    recorder = FleetRecorder(store, source)
    recorder.place()
    with store.read() as conn:
        counts = FleetView(conn, default_age(source.current), now).unit_counts(Scope())
    rows = []
    for kind, step, points in (
        ("hour", timedelta(hours=1), 7 * 24),
        ("day", timedelta(days=1), 90),
    ):
        for back in range(points, 0, -1):
            drift = 1 + back / points * 0.4  # the fleet was worse before: more findings
            for u in counts:
                noncompliant = min(u.hosts, int(u.by_status.get("noncompliant", 0) * drift))
                rows.append(
                    {
                        "kind": kind,
                        "taken_at": now - step * back,
                        "unit": u.unit,
                        "hosts": u.hosts,
                        "compliant": max(
                            0,
                            u.hosts
                            - noncompliant
                            - u.by_status.get("stale", 0)
                            - u.by_status.get("never_reported", 0),
                        ),
                        "noncompliant": noncompliant,
                        "stale": u.by_status.get("stale", 0),
                        "never_reported": u.by_status.get("never_reported", 0),
                        **{
                            f"open_{s}": int(u.open_by_severity.get(s, 0) * drift)
                            for s in ("critical", "high", "medium", "low")
                        },
                        "rules": u.open_by_rule,
                    }
                )
    with store.write() as conn:
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(fleet_snapshots), rows[start : start + BATCH])
    recorder.refresh(now)
    # statistics for the planner, as autovacuum (PostgreSQL) would gather them in a while
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    print(f"seeded {count} hosts in {time.monotonic() - started:.0f} s into {url}")


def _explain(engine: Any, statement: str, parameters: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        cursor.execute(prefix + statement, parameters)
        return "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())


def measure(url: str, directory: Path, repeat: int) -> None:
    from fastapi.testclient import TestClient

    from fleetwatch.collector.settings import CollectorSettings
    from fleetwatch.collector.web.app import create_app

    settings = CollectorSettings(
        database_url=url,
        policy=directory / "policy.toml",
        admin_token=ADMIN,
        data_dir=directory,
        dashboard_live_max_age=3600,
        dashboard_snapshot_seconds=10**6,  # the housekeeper stays out of the timings
        policy_check_interval=10**6,
    )
    app = create_app(settings)
    pages = {
        "overview (live snapshot), 7 days": "/dashboard/",
        "overview, 90-day trends": "/dashboard/?days=90",
        "overview of one unit's trends": "/dashboard/?unit=unit42&days=30",
        "host list, first page": "/dashboard/hosts",
        "host list, one unit": "/dashboard/hosts?unit=unit42",
        "host list, status stale": "/dashboard/hosts?status=stale",
        "host list, text search": "/dashboard/hosts?q=h0999",
        "host list, by last report": "/dashboard/hosts?sort=last_report&desc=true",
        "host list, page after h090000": "/dashboard/hosts?after=h090000.unit35%1Fh090000.unit35",
        "findings, open": "/dashboard/findings",
        "a host": "/dashboard/hosts/h000001.unit01",
    }
    with TestClient(app) as client:
        import re as _re

        form = client.get("/dashboard/login").text
        token = _re.search(r'name="form_token" value="([^"]+)"', form)
        assert token is not None
        client.post("/dashboard/login", data={"form_token": token.group(1), "token": ADMIN})
        engine = app.state.service.engine
        sent: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            sent.append((statement, parameters))

        print(f"{engine.dialect.name}: load average {os.getloadavg()[0]:.2f} before")
        svc = app.state.service
        for _ in range(2):
            started = time.perf_counter()
            svc.fleet_recorder.refresh()  # the housekeeper's round: place hosts, count, record
            print(
                f"  housekeeper's snapshot (three aggregates + write): "
                f"{(time.perf_counter() - started) * 1000:.0f} ms"
            )
        for label, path in pages.items():
            assert client.get(path).status_code == 200, path  # warm up
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
            print(
                f"  {label:36} median {statistics.median(times):7.1f} ms  "
                f"(min {min(times):.1f}, max {max(times):.1f}, n={repeat})"
            )
        svc.settings.dashboard_live_max_age = 0
        times = []
        for _ in range(max(3, repeat // 3)):
            started = time.perf_counter()
            client.get("/dashboard/")
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"  {'overview counted on the spot':36} median {statistics.median(times):7.1f} ms"
            f"  (the fallback when no fresh snapshot exists)"
        )
        svc.settings.dashboard_live_max_age = 3600
        print(f"  load average {os.getloadavg()[0]:.2f} after")
        event.listen(engine, "before_cursor_execute", record)
        for label, path in pages.items():
            if label != "a host":
                client.get(path)
        event.remove(engine, "before_cursor_execute", record)
        touching = [s for s, _ in sent if re.search(r"\breports\b", s)]
        print(f"  statements sent by the list pages: {len(sent)}; naming reports: {len(touching)}")
        scans = []
        for statement, parameters in sent:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = _explain(engine, statement, parameters)
            if "reports" in plan:
                scans.append(plan)
        print(f"  plans that touch the reports table: {len(scans)}")
        for plan in scans:
            print(plan)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="seed a fleet")
    seeding.add_argument("--hosts", type=int, default=10_000)
    seeding.add_argument("--database", required=True)
    seeding.add_argument("--dir", type=Path, required=True, help="where the policy is written")
    measuring = commands.add_parser("measure", help="time the pages, explain their queries")
    measuring.add_argument("--database", required=True)
    measuring.add_argument("--dir", type=Path, required=True)
    measuring.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    if args.command == "seed":
        seed(args.hosts, args.database, args.dir)
    else:
        measure(args.database, args.dir, args.repeat)


if __name__ == "__main__":
    main()
