"""Several collectors behind a real load balancer (HAProxy) on one PostgreSQL.

One collector is killed while hosts report through the balancer: every report is stored
exactly once, and the fleet's housekeeping carries on in exactly one of them. A policy change
seen by three collectors of two workers each is evaluated once, and the findings it opens are
told once. Rate limits hold for the fleet, not once per collector.
"""

from __future__ import annotations

import http.client
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
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import create_engine, select

from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.storage.engine import normalize_url
from fleetwatch.collector.storage.tables import reports
from tests.collector.notifications.conftest import hook_table
from tests.collector.notifications.receivers import WebhookReceiver
from tests.helpers import CollectorProcess, free_port, make_report, wait_until

pytestmark = pytest.mark.postgres

HOSTS = 12
REPORTS_EACH = 30
TAKEOVER = "this process now does the fleet's housekeeping"
SENDER = "this process now sends the fleet's notifications"
REEVALUATED = "hosts evaluated again against the policy and vulnerability data in force"
HOOK_SECRET = "hook-secret-" + "m" * 20

HAPROXY_CONFIG = """
global
    maxconn 2000
defaults
    mode http
    # the client's address for the collectors (enrollment is limited per address)
    option forwardfor
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


def _log_records(collector: CollectorProcess, event: str) -> list[dict[str, object]]:
    """The JSON log records of one event, from every process of a collector."""
    found = []
    for line in collector.log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def _takeovers(collector: CollectorProcess) -> int:
    return len(_log_records(collector, TAKEOVER))


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


def _enroll(url: str, host_id: str, secret: str) -> str:
    enrolled = requests.post(
        url + "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": secret}, timeout=10
    )
    enrolled.raise_for_status()
    return str(enrolled.json()["token"])


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(HOOK_SECRET).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def three_collectors(
    postgres_url: str, haproxy: str, tmp_path: Path, webhook: WebhookReceiver
) -> Iterator[tuple[list[CollectorProcess], Balancer, Path]]:
    """Three collectors of two workers each, one policy file and one webhook, behind HAProxy."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[defaults]\n")
    notifications = tmp_path / "notifications.toml"
    notifications.write_text(
        hook_table(tmp_path, "hook", webhook.url) + '\n[[routes]]\ntargets = ["hook"]\n'
    )
    admin, secret = "admin-" + uuid.uuid4().hex, "enroll-" + uuid.uuid4().hex
    env = {
        "FLEETWATCH_ADMIN_TOKEN": admin,
        "FLEETWATCH_ENROLL_SECRET": secret,
        "FLEETWATCH_WORKERS": "2",
        "FLEETWATCH_NOTIFICATIONS": str(notifications),
        "FLEETWATCH_NOTIFY_INTERVAL": "0.2",
        # each finding its own message, never a summary: they are counted one by one
        "FLEETWATCH_NOTIFY_STORM_THRESHOLD": "1000",
    }
    collectors = []
    try:
        for _ in range(3):
            collector = CollectorProcess(tmp_path, postgres_url, policy=policy, extra_env=env)
            collector.admin_token, collector.enroll_secret = admin, secret
            collectors.append(collector.start(timeout=120))
        balancer = Balancer(haproxy, tmp_path, collectors)
        try:
            yield collectors, balancer, policy
        finally:
            balancer.stop()
    finally:
        for collector in collectors:
            collector.stop()


class TestOncePerFleet:
    @pytest.mark.slow
    def test_a_policy_change_is_evaluated_once_and_its_findings_told_once(
        self,
        three_collectors: tuple[list[CollectorProcess], Balancer, Path],
        webhook: WebhookReceiver,
    ) -> None:
        """Six processes follow the policy file; one of them evaluates the hosts against the
        new policy, one sends the messages, and each finding it opens is told once."""
        collectors, balancer, policy = three_collectors
        hosts = [f"once-{n:02d}.example" for n in range(6)]
        for host_id in hosts:
            token = _enroll(balancer.url, host_id, collectors[0].enroll_secret)
            stored = requests.post(
                balancer.url + "/api/v1/report",
                json=make_report(host_id, 1),
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert stored.status_code == 200, stored.text

        policy.write_text('[defaults]\nforbidden_packages = ["bash"]\n')
        digest = PolicySource(policy).current.digest[:12]

        def told() -> list[dict[str, object]]:
            return [
                b["event"]
                for b in webhook.bodies()
                if b["type"] == "event" and b["event"]["rule"] == "forbidden_packages"
            ]

        wait_until("a message for every host", lambda: len(told()) >= len(hosts), timeout=90)
        # every process checks the file twice a second: a second evaluation, were there one,
        # would show in the logs within a few of their rounds
        time.sleep(3)
        evaluations = [
            record
            for c in collectors
            for record in _log_records(c, REEVALUATED)
            if record.get("digest") == digest
        ]
        assert len(evaluations) == 1, evaluations
        assert evaluations[0]["hosts"] == len(hosts)
        finding_ids = Counter(event["finding_id"] for event in told())
        assert {str(event["host_id"]) for event in told()} == set(hosts)
        assert set(finding_ids.values()) == {1}, "a finding was told twice"
        # one housekeeper and one sender among the six processes
        assert sum(_takeovers(c) for c in collectors) == 1
        assert sum(len(_log_records(c, SENDER)) for c in collectors) == 1


@pytest.fixture
def limited_pair(postgres_url: str, tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    """Two collectors on one database with small limits: four reports at once a host, three
    enrollment attempts an address, both refilled slowly."""
    admin, secret = "admin-" + uuid.uuid4().hex, "enroll-" + uuid.uuid4().hex
    env = {
        "FLEETWATCH_ADMIN_TOKEN": admin,
        "FLEETWATCH_ENROLL_SECRET": secret,
        "FLEETWATCH_HOST_RATE": "0.02",
        "FLEETWATCH_HOST_BURST": "4",
        "FLEETWATCH_ENROLL_RATE": "0.02",
        "FLEETWATCH_ENROLL_BURST": "3",
    }
    collectors = []
    try:
        for _ in range(2):
            collector = CollectorProcess(tmp_path, postgres_url, extra_env=env)
            collector.admin_token, collector.enroll_secret = admin, secret
            collectors.append(collector.start(timeout=120))
        yield collectors
    finally:
        for collector in collectors:
            collector.stop()


class TestRateLimitsAcrossCollectors:
    def test_a_host_alternating_between_collectors_is_held_to_the_fleet_rate(
        self, limited_pair: list[CollectorProcess]
    ) -> None:
        """A host sending alternately to two collectors, faster than its limit: it gets the
        fleet's burst (and the one in flight when the bucket ran out) plus what the rate
        refilled meanwhile, not twice that; each refusal is a 429 with Retry-After."""
        first, second = limited_pair
        token = _enroll(first.url, "fast-01.example", first.enroll_secret)
        started = time.monotonic()
        codes, waits = [], []
        for n in range(16):
            answer = requests.post(
                (first, second)[n % 2].url + "/api/v1/report",
                json=make_report("fast-01.example", n + 1),
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            codes.append(answer.status_code)
            if answer.status_code == 429:
                waits.append(int(answer.headers["Retry-After"]))
        refilled = int(0.02 * (time.monotonic() - started)) + 1
        assert set(codes) == {200, 429}
        assert codes[:4] == [200] * 4
        assert codes.count(200) <= 4 + 1 + refilled, codes
        assert all(wait >= 1 for wait in waits)

    def test_enrollment_from_one_address_is_held_to_the_fleet_burst(
        self, limited_pair: list[CollectorProcess]
    ) -> None:
        """Enrollment attempts from one address, alternately to two collectors: the fleet's
        burst of them, then 429 with Retry-After at both."""
        first, second = limited_pair
        answers = [
            requests.post(
                (first, second)[n % 2].url + "/api/v1/enroll",
                json={"host_id": f"guess-{n}.example", "enroll_secret": "wrong"},
                timeout=10,
            )
            for n in range(6)
        ]
        codes = [a.status_code for a in answers]
        assert codes[:3] == [403, 403, 403]
        assert codes.count(403) <= 4, codes  # the burst, and at most one in flight
        assert codes[-2:] == [429, 429]
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 429)


def _enroll_from(address: str, url: str, host_id: str) -> int:
    """Enroll with a wrong secret from a loopback address of our choosing; the status."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=10, source_address=(address, 0)
    )
    try:
        body = json.dumps({"host_id": host_id, "enroll_secret": "wrong"})
        connection.request("POST", "/api/v1/enroll", body, {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


class TestBehindTheBalancer:
    def test_enrollment_is_limited_per_client_not_per_balancer(
        self, limited_pair: list[CollectorProcess], haproxy: str, tmp_path: Path
    ) -> None:
        """Through HAProxy (which passes the client in X-Forwarded-For), one client's
        attempts use up its own budget only: another client still gets its own."""
        balancer = Balancer(haproxy, tmp_path, limited_pair)
        try:
            first = [_enroll_from("127.0.0.2", balancer.url, f"a-{n}") for n in range(5)]
            other = [_enroll_from("127.0.0.3", balancer.url, f"b-{n}") for n in range(3)]
        finally:
            balancer.stop()
        assert first[:3] == [403, 403, 403]
        assert first[-1] == 429
        assert other == [403, 403, 403]
