"""Fixtures for notification tests: a migrated store, real receivers, a sender over both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from fleetwatch.collector.notifications.config import NotificationsSource
from fleetwatch.collector.notifications.sender import Sender
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.events import NewEvent
from fleetwatch.collector.storage.store import Store
from tests.collector.notifications.receivers import SmtpReceiver, WebhookReceiver
from tests.tls import TestCA

SECRET = "hook-secret-" + "x" * 20


@dataclass(frozen=True)
class Unit:
    """A unit's contacts in the shape the policy's units give them (until the policy has
    units of its own, tests declare them here)."""

    name: str
    emails: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    digest: Literal["immediate", "daily"] = "immediate"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(SECRET).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp(ca: TestCA) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(ca.issue("mail", dns=("localhost",), ips=("127.0.0.1",))).start()
    yield receiver
    receiver.stop()


def secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def smtp_table(tmp_path: Path, smtp: SmtpReceiver, ca: TestCA) -> str:
    password = secret_file(tmp_path, "smtp-password", smtp.box.password)
    return f"""
[smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "starttls"
username = "{smtp.box.user}"
password_file = "{password}"
sender = "fleetwatch@office.example"
ca_file = "{ca.cert}"
"""


def hook_table(tmp_path: Path, name: str, url: str, kind: str = "webhook") -> str:
    secret = secret_file(tmp_path, f"{name}.secret", SECRET)
    return f"""
[targets.{name}]
kind = "{kind}"
url = "{url}"
secret_file = "{secret}"
timeout = 3
"""


class Harness:
    """A sender over a store, its notifications file, and a clock the test moves."""

    def __init__(self, store: Store, tmp_path: Path, text: str, units: list[Unit], **settings: Any):
        self.store = store
        self.path = tmp_path / "notifications.toml"
        self.path.write_text(text)
        self.units = {u.name: u for u in units}
        self.settings = CollectorSettings(
            database_url="sqlite://", data_dir=tmp_path, notifications=self.path, **settings
        )
        self.sender = Sender(
            self.settings, store, NotificationsSource(self.path), lambda: self.units
        )
        self.now = datetime.now(UTC)

    def event(self, kind: str = "opened", **fields: Any) -> None:
        self.events([NewEvent(self.now, kind, **fields)])

    def events(self, new: list[NewEvent]) -> None:
        with self.store.write() as conn:
            self.store.events.append(conn, new)

    def run(self, advance: float = 0.0) -> Any:
        """One pass of the sender, ``advance`` seconds after the last."""
        self.now += timedelta(seconds=advance)
        return self.sender.one_pass(self.now)


@pytest.fixture
def harness(store: Store, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(text: str, units: list[Unit] | None = None, **settings: Any) -> Harness:
        h = Harness(store, tmp_path, text, units or [], **settings)
        made.append(h)
        return h

    yield make
    for h in made:
        h.sender.stop()
