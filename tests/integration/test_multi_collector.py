"""Several collectors behind a real load balancer (HAProxy) on one PostgreSQL.

One collector is killed while hosts report through the balancer: every report is stored
exactly once, and the fleet's housekeeping carries on in exactly one of them.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select

from fleetwatch.collector.storage.engine import normalize_url
from fleetwatch.collector.storage.tables import reports
from tests.helpers import CollectorProcess, free_port, make_report

pytestmark = pytest.mark.postgres

HOSTS = 12
REPORTS_EACH = 30
TAKEOVER = "this process now does the fleet's housekeeping"

HAPROXY_CONFIG = """
global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # a collector that dies mid-request: try the request on another one
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503
frontend fleet
    bind 127.0.0.1:{port}
    default_backend collectors
backend collectors
    # a host's requests go to the same collector while it is up: its rate limits hold
    balance hdr(authorization)
    hash-type consistent
    option httpchk GET /readyz
    default-server inter 500ms fall 2 rise 1
{servers}
"""


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("several collectors share one PostgreSQL database")
    return database_url


@pytest.fixture
def haproxy() -> str:
    found = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.skip("needs HAProxy (apt-get install haproxy)")
    return found


class Balancer:
    def __init__(self, binary: str, directory: Path, backends: list[CollectorProcess]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"    server c{i} 127.0.0.1:{c.port} check" for i, c in enumerate(backends)
        )
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        subprocess.run([binary, "-c", "-q", "-f", str(config)], check=True)
        self.log = (directory / "haproxy.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        msg = "HAProxy did not start serving"
        raise RuntimeError(msg)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def fleet(
    postgres_url: str, haproxy: str, tmp_path: Path
) -> Iterator[tuple[list[CollectorProcess], Balancer]]:
    admin, secret = "admin-" + uuid.uuid4().hex, "enroll-" + uuid.uuid4().hex
    collectors = []
    for _ in range(2):
        collector = CollectorProcess(
            tmp_path,
            postgres_url,
            extra_env={"FLEETWATCH_ADMIN_TOKEN": admin, "FLEETWATCH_ENROLL_SECRET": secret},
        )
        collector.admin_token, collector.enroll_secret = admin, secret
        collectors.append(collector.start(timeout=60))
    balancer = Balancer(haproxy, tmp_path, collectors)
    try:
        yield collectors, balancer
    finally:
        balancer.stop()
        for collector in collectors:
            collector.stop()


def _takeovers(collector: CollectorProcess) -> int:
    count = 0
    for line in collector.log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == TAKEOVER:
            count += 1
    return count


class TestSeveralCollectors:
    def test_a_collector_killed_under_load_loses_nothing_and_stores_nothing_twice(
        self, fleet: tuple[list[CollectorProcess], Balancer], postgres_url: str
    ) -> None:
        """Hosts report through HAProxy; one collector is killed: each report is stored once."""
        collectors, balancer = fleet
        first, second = collectors
        tokens = {}
        for h in range(HOSTS):
            host_id = f"lb-{h:02d}.example"
            enrolled = requests.post(
                balancer.url + "/api/v1/enroll",
                json={"host_id": host_id, "enroll_secret": first.enroll_secret},
                timeout=10,
            )
            enrolled.raise_for_status()
            tokens[host_id] = enrolled.json()["token"]
        holder = next(c for c in collectors if _takeovers(c) == 1)
        survivor = second if holder is first else first
        acks: dict[str, list[str]] = {host_id: [] for host_id in tokens}
        failures: list[str] = []

        def agent(host_id: str) -> None:
            # as the agent does: the same report again until it is acknowledged
            session = requests.Session()
            instance = uuid.uuid4().hex
            for sequence in range(1, REPORTS_EACH + 1):
                body = make_report(host_id, sequence, instance_id=instance)
                for _attempt in range(200):
                    try:
                        answer = session.post(
                            balancer.url + "/api/v1/report",
                            json=body,
                            headers={"Authorization": f"Bearer {tokens[host_id]}"},
                            timeout=10,
                        )
                    except requests.RequestException:
                        time.sleep(0.1)
                        continue
                    if answer.status_code == 200:
                        acks[host_id].append(answer.json()["status"])
                        break
                    time.sleep(0.1)
                else:
                    failures.append(f"{host_id} #{sequence} never acknowledged")
                    return
                time.sleep(0.02)

        threads = [threading.Thread(target=agent, args=(h,)) for h in tokens]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        holder.stop(kill=True)  # the lease holder dies mid-load, without a goodbye
        for thread in threads:
            thread.join(timeout=180)
        assert failures == []
        assert all(len(statuses) == REPORTS_EACH for statuses in acks.values())

        engine = create_engine(normalize_url(postgres_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(reports.c.host_id, reports.c.sequence, reports.c.through)
                ).all()
        finally:
            engine.dispose()
        # a row stands for the quiet reports after it, up to `through`: count each sequence
        stored = Counter(
            (host_id, n)
            for host_id, sequence, through in rows
            for n in range(sequence, (through or sequence) + 1)
        )
        expected = {(h, s) for h in tokens for s in range(1, REPORTS_EACH + 1)}
        assert set(stored) == expected, "every acknowledged report is stored"
        assert set(stored.values()) == {1}, "no report is stored twice"

        # the survivor takes over the fleet's housekeeping once the holder is gone
        deadline = time.monotonic() + 30
        while _takeovers(survivor) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _takeovers(survivor) == 1
