"""The simulated fleet's hosts: who they are, what they send, and their set-up over the real API.

Each host is enrolled with ``POST /api/v1/enroll`` and sends a first report in full (what later
reports name by hash), from several processes at once (``set_up``): a 100,000-host fleet is
mostly this. The hosts (id, token, instance, last sequence, package list) can be appended to a
file as they are set up and read back (``read_hosts``), so that a later run reuses an enrolled
fleet instead of enrolling one again.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from benchmarks.ingest_load import gz, section, synthetic_packages
from tests.helpers import BASE_REPORT, section_data

if TYPE_CHECKING:
    from pathlib import Path

VARIANTS = 40  # distinct package lists in the fleet
PACKAGES = 1500
CHUNK = 500  # hosts a set-up task enrolls and reports, and the unit the hosts file grows by


@dataclass
class Host:
    host_id: str
    token: str
    instance: str
    sequence: int
    variant: int


def fixed_sections() -> dict[str, dict[str, Any]]:
    return {
        name: section(name, section_data(name))
        for name in ("system", "ports", "services", "checks")
    }


def variants() -> list[dict[str, dict[str, Any]]]:
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


def resources(rng: random.Random) -> dict[str, Any]:
    data = section_data("resources")
    data["load_average"] = [round(rng.uniform(0, 4), 2) for _ in range(3)]
    data["memory"] = {**data["memory"], "available_bytes": rng.randrange(10**9, 2 * 10**10)}
    data["memory"]["percent"] = round(
        100 - data["memory"]["available_bytes"] * 100 / data["memory"]["total_bytes"], 1
    )
    return section("resources", data)


def body(
    host: Host, sections: dict[str, Any], collected_at: datetime | None = None
) -> tuple[bytes, bool]:
    return gz(
        {
            "schema_version": 1,
            "host_id": host.host_id,
            "instance_id": host.instance,
            "sequence": host.sequence,
            "collected_at": (collected_at or datetime.now(UTC)).isoformat(),
            "agent_version": "0.1.0",
            "sections": sections,
        }
    )


class Poster:
    """One keep-alive connection per thread to the collector."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.local = threading.local()

    def post(
        self, path: str, token: str | None, body: tuple[bytes, bool]
    ) -> tuple[int, float | None, bytes]:
        """The answer's status, its Retry-After if it has one, and its body."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.parts.hostname or "", self.parts.port, timeout=120
            )
            self.local.conn = conn
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body[1]:
            headers["Content-Encoding"] = "gzip"
        try:
            conn.request("POST", path, body=body[0], headers=headers)
            response = conn.getresponse()
            answer = response.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            self.local.conn = None
        retry_after = response.getheader("retry-after")
        return response.status, float(retry_after) if retry_after else None, answer


_process: dict[str, Any] = {}  # what each set-up process builds once


def _start_process(url: str, secret: str) -> None:
    _process.update(
        url=url, secret=secret, fixed=fixed_sections(), variants=variants(), poster=Poster(url)
    )


def _post_until_taken(poster: Poster, path: str, token: str | None, data: Any) -> tuple[int, bytes]:
    """As the agent does: a refused (429/503) request is sent again after its Retry-After."""
    while True:
        try:
            status, retry_after, answer = poster.post(path, token, data)
        except OSError:
            time.sleep(1)
            continue
        if status not in {429, 503}:
            return status, answer
        time.sleep(retry_after or 5.0)


def _set_up_one(n: int) -> tuple[Host | None, str]:
    """Enroll host ``n`` and send its first report in full: the host, or None and why not."""
    poster: Poster = _process["poster"]
    host_id = f"fleet-{n:06d}.sim"
    enrollment = json.dumps({"host_id": host_id, "enroll_secret": _process["secret"]}).encode()
    status, answer = _post_until_taken(poster, "/api/v1/enroll", None, (enrollment, False))
    if status != 200:
        return None, f"enroll {status}"
    host = Host(host_id, json.loads(answer)["token"], uuid.uuid4().hex, 1, n % VARIANTS)
    rng = random.Random(n)
    sections = {
        **_process["fixed"],
        **_process["variants"][host.variant],
        "resources": resources(rng),
    }
    status, _ = _post_until_taken(poster, "/api/v1/report", host.token, body(host, sections))
    if status != 200:
        return None, f"first report {status}"
    return host, "ok"


def _set_up_chunk(first: int) -> tuple[int, list[Host], Counter[str]]:
    count = _process["count"]
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(_set_up_one, range(first, min(first + CHUNK, count))))
    return first, [host for host, _ in done if host is not None], Counter(why for _, why in done)


def read_hosts(path: Path) -> tuple[list[Host], set[int]]:
    """The hosts a hosts file holds, and the chunks (by first index) set up in full."""
    hosts: list[Host] = []
    chunks: set[int] = set()
    if not path.exists():
        return hosts, chunks
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "chunk" in record:
            chunks.add(record["chunk"])
        else:
            hosts.append(Host(**record))
    return hosts, chunks


def set_up(
    url: str, secret: str, count: int, processes: int, hosts_file: Path | None = None
) -> tuple[list[Host], Counter[str], float]:
    """Enroll ``count`` hosts and send each its first full report, from ``processes`` processes.

    With ``hosts_file``, each chunk of hosts is appended to it when done, and chunks the file
    already holds are not set up again (a set-up that stopped goes on where it stopped; a host
    of a chunk that stopped halfway is enrolled already and is left out). Returns the hosts,
    the outcomes by kind, and the seconds it took.
    """
    hosts, done = read_hosts(hosts_file) if hosts_file else ([], set())
    todo = [first for first in range(0, count, CHUNK) if first not in done]
    _process["count"] = count
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    shown = started
    made = 0
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_start_process, initargs=(url, secret)) as pool:
        for first, chunk, kinds in pool.imap_unordered(_set_up_chunk, todo):
            hosts.extend(chunk)
            outcomes.update(kinds)
            made += len(chunk)
            if hosts_file is not None:
                with hosts_file.open("a") as out:
                    out.writelines(json.dumps(asdict(host)) + "\n" for host in chunk)
                    out.write(json.dumps({"chunk": first}) + "\n")
            now = time.monotonic()
            if now - shown > 30:
                shown = now
                print(
                    f"  set up {len(hosts)}/{count} hosts, {made / (now - started):.0f} a second",
                    file=sys.stderr,
                    flush=True,
                )
    return hosts, outcomes, time.monotonic() - started
