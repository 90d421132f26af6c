"""Notifications with real collector processes: two `fleetwatch serve` on one database send
each message once between them, a killed sender's work passes on, and the status and test
commands work over HTTP against a real webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.events import NewEvent
from fleetwatch.collector.storage.store import Store
from tests.collector.notifications.conftest import hook_table
from tests.collector.notifications.receivers import WebhookReceiver
from tests.helpers import BIN, CollectorProcess, wait_until

SECRET = "hook-secret-" + "x" * 20
FAST = {
    "FLEETWATCH_NOTIFY_INTERVAL": "0.2",
    "FLEETWATCH_NOTIFY_RETRY_FIRST": "0.5",
    "FLEETWATCH_NOTIFY_RETRY_MAX": "1",
}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(SECRET).start()
    yield receiver
    receiver.stop()


def notifications_file(tmp_path: Path, webhook: WebhookReceiver) -> Path:
    path = tmp_path / "notifications.toml"
    text = hook_table(tmp_path, "hook", webhook.url)
    text += hook_table(tmp_path, "dead", "http://127.0.0.1:9/never")
    text += (
        '\n[[routes]]\ntargets = ["hook"]\n\n[[routes]]\nunits = ["ghosts"]\ntargets = ["dead"]\n'
    )
    path.write_text(text)
    return path


def append(store: Store, first: int, count: int, unit: str = "parks") -> None:
    """Events one transaction each, as findings open one report at a time."""
    for n in range(first, first + count):
        with store.write() as conn:
            store.events.append(conn, [NewEvent(datetime.now(UTC), "opened", host_id=f"h{n}",
                                                unit=unit, finding_id=n, rule="allowed_ports",
                                                severity="high", subject=f"tcp/{n}")])  # fmt: skip


def finding_ids(webhook: WebhookReceiver) -> Counter[int]:
    return Counter(b["event"]["finding_id"] for b in webhook.bodies() if b["type"] == "event")


def holders(collectors: list[CollectorProcess]) -> list[int]:
    """The ports of the collectors whose log says they took the notifications lease."""
    return [
        c.port
        for c in collectors
        if "this process now sends the fleet's notifications" in c.log.read_text()
    ]


@pytest.fixture
def two_collectors(
    tmp_path: Path, database_url: str, store: Store, webhook: WebhookReceiver
) -> Iterator[list[CollectorProcess]]:
    env = {"FLEETWATCH_NOTIFICATIONS": str(notifications_file(tmp_path, webhook)), **FAST}
    made = [CollectorProcess(tmp_path, database_url, extra_env=env) for _ in range(2)]
    # the second shares the first's tokens, as collectors of one fleet do
    made[1].env.update(
        FLEETWATCH_ADMIN_TOKEN=made[0].admin_token, FLEETWATCH_ENROLL_SECRET=made[0].enroll_secret
    )
    made[1].admin_token = made[0].admin_token
    try:
        for c in made:
            c.start()
        yield made
    finally:
        for c in made:
            c.stop()


@pytest.mark.slow
def test_two_collectors_send_each_message_once(
    two_collectors: list[CollectorProcess], store: Store, webhook: WebhookReceiver
) -> None:
    """Of two collector processes on one database, one sends: every event reaches the
    receiver once; when that one is killed, the other takes over and still none is twice."""
    append(store, 0, 15)
    wait_until("15 messages", lambda: len(finding_ids(webhook)) == 15, timeout=30)

    def recorded() -> bool:
        """Every delivery the receiver has is recorded as sent: a sender killed between the
        receiver's answer and its commit would send that one again (at least once)."""
        with store.read() as conn:
            counts = store.deliveries.counts(conn)
        return sum(c.sent for c in counts) >= 15 and not any(c.pending for c in counts)

    wait_until("the 15 deliveries recorded as sent", recorded, timeout=30)
    (holder,) = holders(two_collectors)
    killed = next(c for c in two_collectors if c.port == holder)
    killed.stop(kill=True)
    append(store, 15, 15)
    wait_until("30 messages", lambda: len(finding_ids(webhook)) == 30, timeout=60)
    counts = finding_ids(webhook)
    assert set(counts) == set(range(30))
    assert set(counts.values()) == {1}, "a message arrived twice"
    assert all(r.signed for r in webhook.received)
    assert len(holders(two_collectors)) == 2  # the survivor took the lease over


def cli(collector: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update(FLEETWATCH_API_URL=collector.url, FLEETWATCH_API_TOKEN=collector.admin_token)
    return subprocess.run(
        [str(BIN / "fleetwatch"), *args], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_status_and_test_commands_over_http(
    tmp_path: Path, database_url: str, store: Store, webhook: WebhookReceiver
) -> None:
    """A target that keeps failing shows in the status endpoint and in `fleetwatch notify
    status` (which exits 3); `fleetwatch notify test` sends now and says what happened."""
    env = {"FLEETWATCH_NOTIFICATIONS": str(notifications_file(tmp_path, webhook)),
           "FLEETWATCH_NOTIFY_FAILING_AFTER": "2", **FAST}  # fmt: skip
    collector = CollectorProcess(tmp_path, database_url, extra_env=env).start()
    try:
        append(store, 0, 1, unit="ghosts")  # to both the hook and the dead target
        wait_until(
            "the dead target to be failing",
            lambda: collector.api("/api/v1/notifications/status")["failing"] == ["dead"],
            timeout=30,
        )
        status = collector.api("/api/v1/notifications/status")
        by_name = {t["target"]: t for t in status["targets"]}
        assert by_name["hook"]["state"] == "ok"
        assert by_name["hook"]["sent"] == 1
        assert by_name["dead"]["pending"] == 1
        assert "127.0.0.1:9" in by_name["dead"]["last_error"]
        shown = cli(collector, "notify", "status")
        assert shown.returncode == 3, shown.stderr
        assert "FAILING" in shown.stdout
        assert "failing: dead" in shown.stdout
        as_json = json.loads(cli(collector, "notify", "status", "--json").stdout)
        assert as_json["failing"] == ["dead"]
        sent = cli(collector, "notify", "test", "hook")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("hook: sent: http://127.0.0.1:")
        assert webhook.bodies()[-1]["type"] == "test"
        failed = cli(collector, "notify", "test", "dead")
        assert failed.returncode == 1
        assert "dead: NOT sent: http://127.0.0.1:9: ConnectionError" in failed.stdout
        unknown = cli(collector, "notify", "test", "nope")
        assert unknown.returncode == 1
        assert "no target named 'nope'" in unknown.stdout
        # the fleet's targets are not a unit's business, and only admins send tests
        made = requests.post(
            collector.url + "/api/v1/tokens",
            json={"name": "parks-reader", "kind": "read", "unit": "parks"},
            headers={"Authorization": f"Bearer {collector.admin_token}"},
            timeout=10,
        ).json()
        unit_token = {"Authorization": f"Bearer {made['token']}"}
        status_answer = requests.get(collector.url + "/api/v1/notifications/status",
                                     headers=unit_token, timeout=10)  # fmt: skip
        assert status_answer.status_code == 403
        test_answer = requests.post(collector.url + "/api/v1/notifications/targets/hook/test",
                                    headers=unit_token, timeout=10)  # fmt: skip
        assert test_answer.status_code == 403
    finally:
        collector.stop()
