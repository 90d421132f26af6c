"""Token rotation against the real `fleetwatch serve` on SQLite and PostgreSQL: one host
hammering POST /api/v1/token/rotate cannot pile up live tokens, and is slowed with 429."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from fleetwatch.collector.storage.engine import normalize_url
from tests.helpers import CollectorProcess, make_report

pytestmark = pytest.mark.slow

FLOOD_SECONDS = 10.0
THREADS = 4


def live_tokens(database_url: str, host_id: str) -> int:
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM host_tokens WHERE host_id = :h AND revoked_at IS NULL"
                    ),
                    {"h": host_id},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def enroll(collector: CollectorProcess, host_id: str) -> str:
    answer = requests.post(
        collector.url + "/api/v1/enroll",
        json={"host_id": host_id, "enroll_secret": collector.enroll_secret},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def flood(collector: CollectorProcess, token: str) -> dict[int, int]:
    """Rotate with ``token`` from THREADS threads for FLOOD_SECONDS; answers by status."""
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def rotate() -> None:
        session = requests.Session()
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline:
            status = session.post(
                collector.url + "/api/v1/token/rotate",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).status_code
            with lock:
                counts[status] = counts.get(status, 0) + 1

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(rotate) for _ in range(THREADS)]:
            future.result()
    return counts


def report_latencies(collector: CollectorProcess, token: str, host_id: str) -> list[float]:
    """Another host reporting every 0.25 s during FLOOD_SECONDS; the latency of each."""
    latencies = []
    deadline = time.monotonic() + FLOOD_SECONDS
    sequence = 0
    while time.monotonic() < deadline:
        sequence += 1
        started = time.monotonic()
        answer = requests.post(
            collector.url + "/api/v1/report",
            json=make_report(host_id, sequence, {}),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        latencies.append(time.monotonic() - started)
        time.sleep(0.25)
    return latencies


@pytest.mark.parametrize("limited", [True, False], ids=["default-rate", "rate-off"])
def test_one_host_cannot_make_thousands_of_live_tokens(
    tmp_path: Path, database_url: str, limited: bool
) -> None:
    """A host rotating as fast as it can for 10 s: with the default rate it gets rotate_burst
    new tokens and 429s; with the rate lifted, thousands of rotations still leave it two live
    tokens. Another host's reports go on meanwhile."""
    extra = (
        {} if limited else {"FLEETWATCH_ROTATE_RATE": "100000", "FLEETWATCH_ROTATE_BURST": "100000"}
    )
    collector = CollectorProcess(tmp_path, database_url, extra_env=extra).start()
    try:
        token = enroll(collector, "rotating-01")
        bystander = enroll(collector, "bystander-01")
        latencies: list[float] = []
        watcher = threading.Thread(
            target=lambda: latencies.extend(report_latencies(collector, bystander, "bystander-01"))
        )
        watcher.start()
        counts = flood(collector, token)
        watcher.join()
        live = live_tokens(database_url, "rotating-01")
        print(
            f"\nrotations answered {counts}; live tokens {live}; bystander reports: "
            f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"slowest {max(latencies) * 1000:.0f} ms"
        )
        assert live <= 2
        if limited:
            assert counts.get(200) == 5  # rotate_burst; a new one every 100 s after
            assert counts.get(429, 0) > 100
        else:
            assert counts.get(200, 0) > 100
        assert set(counts) <= {200, 429}
        assert live_tokens(database_url, "bystander-01") == 1
        # the token the host rotated with still works: it never used a new one
        still = requests.post(
            collector.url + "/api/v1/report",
            json=make_report("rotating-01", 1, {}),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert still.status_code == 200
    finally:
        collector.stop()
