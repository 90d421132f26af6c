"""Notification figures: planning a storm, and sending to a real webhook and SMTP server.

    python -m benchmarks.notifications [--postgres URL]

The sender runs in this process against a real database (SQLite, and PostgreSQL when a URL
is given or FLEETWATCH_TEST_DATABASE_URL is set), a webhook receiver checking signatures on
loopback, and aiosmtpd with STARTTLS and AUTH on loopback.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from benchmarks.__main__ import machine
from fleetwatch.collector.storage.engine import make_engine, normalize_url, upgrade
from fleetwatch.collector.storage.events import NewEvent
from fleetwatch.collector.storage.store import Store
from tests.collector.notifications.conftest import SECRET, Harness, Unit, hook_table, smtp_table
from tests.collector.notifications.receivers import SmtpReceiver, WebhookReceiver
from tests.conftest import _postgres_url
from tests.tls import TestCA

if TYPE_CHECKING:
    from collections.abc import Callable


def events(h: Harness, units: list[str], per_unit: int) -> list[NewEvent]:
    return [
        NewEvent(
            h.now,
            "opened",
            host_id=f"h{u}-{n}",
            unit=unit,
            finding_id=n,
            rule="allowed_ports",
            severity="high",
            subject=f"tcp/{n}",
            detail={"detail": "open"},
        )
        for u, unit in enumerate(units)
        for n in range(per_unit)
    ]


def timed(label: str, call: Callable[[], object]) -> object:
    started = time.perf_counter()
    result = call()
    print(f"  {label}: {time.perf_counter() - started:.2f} s  {result}")
    return result


def run(database_url: str, name: str, tmp: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(engine)
    ca = TestCA(tmp / "ca")
    webhook = WebhookReceiver(SECRET).start()
    smtp = SmtpReceiver(ca.issue("mail", ips=("127.0.0.1",))).start()
    try:
        print(f"{name}:")
        units = [f"unit{u:02d}" for u in range(95)]
        text_ = hook_table(tmp, "hook", webhook.url) + '\n[[routes]]\ntargets = ["hook"]\n'
        h = Harness(store, tmp, text_, [], notify_storm_threshold=20, notify_batch=5000)
        h.events(events(h, ["parks"], 2000))
        timed("a storm: 2,000 events of one unit, planned and sent (1 summary)", h.run)
        h.events(events(h, units, 10))
        timed("950 events of 95 units (10 each), planned and sent: 950 webhook messages", h.run)
        assert len(webhook.received) == 951
        assert all(r.signed for r in webhook.received)
        mail = Harness(
            store,
            tmp,
            smtp_table(tmp, smtp, ca),
            [Unit(u, emails=[f"it@{u}.example"]) for u in units[:50]],
        )
        mail.sender.plan(mail.now)  # past the events above (they were for the hook only)
        mail.events(events(mail, units[:50], 2))
        timed("100 e-mails (50 units, 2 each), each over its own STARTTLS + AUTH session", mail.run)
        assert len(smtp.messages) == 100
    finally:
        webhook.stop()
        smtp.stop()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get("FLEETWATCH_TEST_DATABASE_URL"))
    args = parser.parse_args()
    print(machine())
    print(f"load average at the start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        (tmp / "sqlite").mkdir()
        run(f"sqlite:///{tmp / 'sqlite' / 'bench.db'}", "SQLite", tmp / "sqlite")
        if args.postgres:
            schema = f"fwbench_{uuid.uuid4().hex[:12]}"
            admin = create_engine(normalize_url(args.postgres))
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                os.environ["FLEETWATCH_TEST_DATABASE_URL"] = args.postgres
                (tmp / "pg").mkdir()
                run(_postgres_url(schema), "PostgreSQL", tmp / "pg")
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
