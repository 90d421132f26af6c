"""The API's paged lists at scale, over real HTTP against the real collector.

    python -m benchmarks.dashboard seed --hosts 100000 --database URL --dir DIR
    python -m benchmarks.paging --database URL --dir DIR [--repeat 7]

On a fleet seeded by `benchmarks.dashboard` (the policy in DIR), starts `fleetwatch serve`
and times each page (request sent to last byte received, on loopback; the median of
``--repeat`` after one warm-up): the first page of hosts, a page 90,000 hosts in (by its
cursor), hosts of one unit, of one status, found by text, sorted by last report both ways,
findings of one severity and a page deep into them, a host's reports, the units (each with
its hosts and counts: not paged); then, in process, the
fleet's hosts by unit and status from the kept counts (`storage.tallies`) beside the same
counted over every host.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import bindparam, func, select, update

from benchmarks.fleet_keep import vacuum_if_autovacuum_is_off
from fleetwatch.collector.compliance.placement import default_age
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.storage.engine import make_engine
from fleetwatch.collector.storage.fleet_view import FleetView, Scope
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import findings, hosts
from fleetwatch.collector.storage.tallies import hosts_by_status
from fleetwatch.collector.web import paging
from tests.helpers import CollectorProcess


def _timed(session: requests.Session, url: str, params: dict[str, Any], repeat: int) -> str:
    times = []
    size = rows = 0
    for i in range(repeat + 1):
        started = time.perf_counter()
        response = session.get(url, params=params, timeout=120)
        body = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != requests.codes.ok:
            return f"HTTP {response.status_code}: {body[:200]!r}"
        if i:
            times.append(elapsed)
        size = len(body)
        rows = len(payload) if isinstance(payload := response.json(), list) else 1
    return (
        f"median {statistics.median(times) * 1000:6.0f} ms  "
        f"max {max(times) * 1000:6.0f} ms  ({rows} rows, {size / 1024:.0f} KiB)"
    )


def _host_filters(**given: Any) -> dict[str, Any]:
    base = {"unit": None, "group": None, "status": None, "text": None, "sort": "host"}
    return {**base, "desc": False, **given}


def _finding_filters(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(
        ("scope_unit", "unit", "host_id", "rule", "severity", "is_open", "state", "waived")
    )
    return {**base, "overdue_at": False, **given}


def _bring_to_now(store: Store) -> None:
    """Move every host's report times forward by the time since the seed, so that the fleet
    is as fresh as the seed left it (2 % stale), not staler with every minute since."""
    with store.read() as conn:
        newest = conn.execute(select(func.max(hosts.c.last_received_at))).scalar_one()
    if newest is None:
        return
    shift = datetime.now(UTC) - (newest if newest.tzinfo else newest.replace(tzinfo=UTC))
    with store.write() as conn:
        for start in range(0, 100_000_000, 20_000):  # in slices: a SQLite statement at a time
            ids = [
                h
                for (h,) in conn.execute(
                    select(hosts.c.host_id)
                    .where(hosts.c.last_received_at.is_not(None))
                    .order_by(hosts.c.host_id)
                    .offset(start)
                    .limit(20_000)
                )
            ]
            if not ids:
                break
            rows = conn.execute(
                select(hosts.c.host_id, hosts.c.last_collected_at, hosts.c.last_received_at).where(
                    hosts.c.host_id.in_(ids)
                )
            ).all()
            conn.execute(
                update(hosts)
                .where(hosts.c.host_id == bindparam("h"))
                .values(last_collected_at=bindparam("c"), last_received_at=bindparam("r")),
                [{"h": h, "c": c + shift if c else None, "r": r + shift} for h, c, r in rows],
            )
    print(f"  report times moved forward by {shift.total_seconds():.0f} s (to now)")


def measure(url: str, directory: Path, repeat: int, limit: int) -> None:
    engine = make_engine(url)
    store = Store(engine)
    _bring_to_now(store)
    if engine.dialect.name == "postgresql":
        # the move rewrote every host row: without autovacuum, each run would read more
        # dead rows than the one before
        vacuum_if_autovacuum_is_off(engine.url, "the fleet")
    with store.read() as conn:
        top = conn.execute(select(func.max(findings.c.id))).scalar_one()
        host_count = conn.execute(select(func.count()).select_from(findings)).scalar_one()
    engine.dispose()
    deep_host = "h090000.unit35"
    hosts_pages: list[tuple[str, dict[str, Any]]] = [
        ("hosts, first page", {}),
        (
            "hosts, a page 90,000 in (cursor)",
            {"cursor": paging.encode("hosts", _host_filters(), [deep_host, deep_host])},
        ),
        ("hosts, one unit", {"unit": "unit07"}),
        (
            "hosts, one unit, a later page",
            {
                "unit": "unit07",
                "cursor": paging.encode(
                    "hosts", _host_filters(unit="unit07"), ["h049977.unit07", "h049977.unit07"]
                ),
            },
        ),
        ("hosts, status stale", {"status": "stale"}),
        ("hosts, status noncompliant", {"status": "noncompliant"}),
        ("hosts, text search 'h0999'", {"text": "h0999"}),
        ("hosts, sorted by last report", {"sort": "last_report"}),
        ("hosts, sorted by last report, newest first", {"sort": "last_report", "desc": "true"}),
    ]
    severity = _finding_filters(severity="high")
    findings_pages: list[tuple[str, dict[str, Any]]] = [
        ("findings, first page", {}),
        ("findings, severity high", {"severity": "high"}),
        ("findings, severity low (6 % of them)", {"severity": "low"}),
        (
            "findings, severity high, a page 80% in (cursor)",
            {
                "severity": "high",
                "cursor": paging.encode("findings", severity, [int(top * 0.8)]),
            },
        ),
        ("findings, open, one unit", {"open": "true", "unit": "unit07"}),
        ("findings, one rule", {"rule": "allowed_ports"}),
    ]
    with tempfile.TemporaryDirectory(prefix="fleetwatch-paging-") as tmp:
        collector = CollectorProcess(
            Path(tmp),
            url,
            policy=directory / "policy.toml",
            extra_env={"FLEETWATCH_WORKERS": "1"},
        ).start(timeout=600)
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {collector.admin_token}"
            base = collector.url + "/api/v1"
            print(f"  {host_count} findings; pages of {limit} rows; median of {repeat}")
            line = _timed(session, collector.url + "/healthz", {}, repeat)
            print(f"  {'GET /healthz (the floor: no database)':<45} {line}", flush=True)
            for label, params in hosts_pages:
                line = _timed(session, base + "/hosts", {"limit": limit, **params}, repeat)
                print(f"  {label:<45} {line}", flush=True)
            for label, params in findings_pages:
                line = _timed(session, base + "/findings", {"limit": limit, **params}, repeat)
                print(f"  {label:<45} {line}", flush=True)
            line = _timed(session, base + f"/hosts/{deep_host}/reports", {"limit": 50}, repeat)
            print(f"  {'a host`s reports':<45} {line}", flush=True)
            line = _timed(session, base + "/units", {}, repeat)
            print(f"  {'units, with their hosts and counts':<45} {line}", flush=True)
        finally:
            collector.stop()
    _counts(url, directory, repeat)


def _counts(url: str, directory: Path, repeat: int) -> None:
    engine = make_engine(url)
    store = Store(engine)
    age = default_age(PolicySource(directory / "policy.toml").current)
    now = datetime.now(UTC)
    for label, count in (
        ("hosts by unit and status, kept counts", lambda c: hosts_by_status(c, now, age)),
        (
            "hosts by unit and status, every host",
            lambda c: (
                list(
                    c.execute(
                        select(sub.c.unit, sub.c.status, func.count()).group_by(
                            sub.c.unit, sub.c.status
                        )
                    )
                )
                if (sub := FleetView(c, age, now)._hosts(Scope()).subquery()) is not None  # noqa: SLF001
                else None
            ),
        ),
    ):
        times = []
        for i in range(repeat + 1):
            with store.read() as conn:
                started = time.perf_counter()
                count(conn)
                if i:
                    times.append(time.perf_counter() - started)
        print(f"  {label:<45} median {statistics.median(times) * 1000:6.0f} ms")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="the seeded database's URL")
    parser.add_argument("--dir", type=Path, required=True, help="where the seed put policy.toml")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--limit", type=int, default=paging.DEFAULT_LIMIT)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    measure(args.database, args.dir, args.repeat, args.limit)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
