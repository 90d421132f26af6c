"""Load for the collector: many hosts posting reports over real HTTP, as agents do.

Bodies are built and gzip-compressed before the clock starts, so the figures are the
collector's, not the load generator's JSON encoding.
"""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fleetwatch.agent.client import COMPRESS_ABOVE
from fleetwatch.schema import SECTION_TYPES, section_hash


def synthetic_packages(base: list[list[str]], count: int, salt: str) -> list[list[str]]:
    """``count`` package rows: the captured ones, then made-up ones shaped like them."""
    packages = copy.deepcopy(base[:count])
    n = 0
    while len(packages) < count:
        name, version, arch, source, source_version = base[n % len(base)]
        packages.append([f"{name}-extra{n}", version, arch, f"{source}-extra{n}", source_version])
        n += 1
    packages[0] = [packages[0][0], packages[0][1] + f"+{salt}", *packages[0][2:]]
    packages.sort(key=lambda p: (p[0], p[2]))
    return packages


def section(name: str, data: dict[str, Any]) -> dict[str, Any]:
    model = SECTION_TYPES[name].model_validate(data)  # type: ignore[index]
    return {"hash": section_hash(model), "data": data}


@dataclass
class Job:
    """Reports posted in order on one connection (one host's reports, in sequence)."""

    url: str
    token: str
    bodies: list[tuple[bytes, bool]]  # (body, gzip-compressed)


def _post_all(job: Job) -> tuple[int, int, float]:
    """Post the bodies in order on one keep-alive connection: (ok, errors, seconds)."""
    parts = urlsplit(job.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    plain = {"Authorization": f"Bearer {job.token}", "Content-Type": "application/json"}
    compressed = {**plain, "Content-Encoding": "gzip"}
    ok = errors = 0
    started = time.perf_counter()
    for body, gzipped in job.bodies:
        conn.request("POST", "/api/v1/report", body=body, headers=compressed if gzipped else plain)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            ok += 1
        else:
            errors += 1
    conn.close()
    return ok, errors, time.perf_counter() - started


def _run_process(jobs: list[Job]) -> tuple[int, int]:
    results: list[tuple[int, int, float]] = []
    lock = threading.Lock()

    def worker(job: Job) -> None:
        outcome = _post_all(job)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r[0] for r in results), sum(r[1] for r in results)


def run_load(jobs: list[Job], processes: int = 2) -> tuple[int, int, float]:
    """Post every job's bodies concurrently (one connection per job); (ok, errors, seconds)."""
    chunks = [jobs[i::processes] for i in range(processes)]
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        outcomes = list(pool.map(_run_process, chunks))
    elapsed = time.perf_counter() - started
    return sum(o[0] for o in outcomes), sum(o[1] for o in outcomes), elapsed


def gz(body: dict[str, Any]) -> tuple[bytes, bool]:
    """The body as the agent sends it: gzip-compressed when it is large enough to gain."""
    raw = json.dumps(body).encode()
    if len(raw) <= COMPRESS_ABOVE:
        return raw, False
    return gzip.compress(raw, compresslevel=6, mtime=0), True
