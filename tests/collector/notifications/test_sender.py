"""The sender with real receivers: a webhook server checking signatures and an SMTP server
taking mail over STARTTLS with a password; on SQLite, and on PostgreSQL when configured."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from fleetwatch.collector.storage.deliveries import EventForTarget
from fleetwatch.collector.storage.events import NewEvent
from tests.collector.notifications.conftest import Harness, Unit, hook_table, smtp_table
from tests.collector.notifications.receivers import SmtpReceiver, WebhookReceiver
from tests.tls import TestCA

Make = Callable[..., Harness]


def opened(
    h: Harness, n: int, unit: str = "parks", severity: str = "high", **kw: object
) -> NewEvent:
    return NewEvent(
        h.now,
        str(kw.pop("kind", "opened")),
        host_id=f"web-{n:04d}.{unit}",
        unit=unit,
        finding_id=n,
        rule=str(kw.pop("rule", "allowed_ports")),
        severity=severity,
        subject=f"tcp/{8000 + n}",
        detail={"detail": f"tcp/{8000 + n} is open"},
    )


def route(targets: str = '"hook"', extra: str = "") -> str:
    return f"\n[[routes]]\ntargets = [{targets}]\n{extra}\n"


class TestWebhook:
    def test_an_opened_finding_reaches_the_webhook_signed(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """An opened finding is one signed POST whose JSON tells the event; a second pass
        sends nothing more."""
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route())
        h.events([opened(h, 1)])
        result = h.run()
        assert (result.events, result.planned, result.sent, result.failed) == (1, 1, 1, 0)
        (got,) = webhook.received
        assert got.signed
        assert got.headers["Idempotency-Key"] == got.headers["X-Fleetwatch-Delivery"]
        body = got.json
        assert body["type"] == "event"
        assert body["event"]["kind"] == "opened"
        assert body["event"]["host_id"] == "web-0001.parks"
        assert body["event"]["subject"] == "tcp/8001"
        assert body["title"] == "[high] opened: allowed_ports tcp/8001 on web-0001.parks (parks)"
        assert h.run(advance=60).sent == 0
        assert len(webhook.received) == 1

    def test_a_tampered_body_fails_the_receivers_check(self, webhook: WebhookReceiver) -> None:
        """The receiver's check tells a signed body from one changed on the way."""
        import time

        from fleetwatch.collector.notifications.targets import signature

        ts = str(int(time.time()))
        body = b'{"a":1}'
        headers = {
            "X-Fleetwatch-Timestamp": ts,
            "X-Fleetwatch-Signature": signature(webhook.secret or "", ts, body),
        }
        assert webhook.verify(headers, body)
        assert not webhook.verify(headers, b'{"a":2}')
        stale = str(int(time.time()) - 3600)
        headers_old = {
            "X-Fleetwatch-Timestamp": stale,
            "X-Fleetwatch-Signature": signature(webhook.secret or "", stale, body),
        }
        assert not webhook.verify(headers_old, body)

    def test_routes_pick_events_by_unit_severity_rule_and_kind(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """Only events of the route's units, at or above its severity, of its rules and of
        the kinds worth telling reach its targets."""
        extra = 'units = ["parks"]\nmin_severity = "high"\nrules = ["allowed_ports"]'
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route(extra=extra))
        h.events([
            opened(h, 1),  # yes
            opened(h, 2, unit="schools"),  # another unit
            opened(h, 3, severity="medium"),  # below high
            opened(h, 4, severity="critical"),  # yes
            opened(h, 5, rule="updates_pending"),  # another rule
            opened(h, 6, kind="acknowledged"),  # not a kind worth a message by default
            opened(h, 7, kind="resolved"),  # yes
        ])  # fmt: skip
        h.run()
        assert [b["event"]["finding_id"] for b in webhook.bodies()] == [1, 4, 7]


class TestEmail:
    def test_a_units_addresses_get_mail_over_starttls_with_a_password(
        self, harness: Make, smtp: SmtpReceiver, ca: TestCA, tmp_path: Path
    ) -> None:
        """A unit's e-mail contacts get one mail per event, sent after STARTTLS and AUTH,
        with the delivery's Message-ID."""
        units = [Unit("parks", emails=["it@parks.example", "boss@parks.example"])]
        h = harness(smtp_table(tmp_path, smtp, ca), units)
        h.events([opened(h, 1), opened(h, 2, unit="schools")])
        assert h.run().sent == 1
        (message,) = smtp.messages
        assert smtp.box.logins == ["fleetwatch"]
        assert smtp.box.tls_seen == [True]
        assert smtp.box.envelopes == [
            ("fleetwatch@office.example", ["it@parks.example", "boss@parks.example"])
        ]
        assert message["Subject"] == (
            "fleetwatch: [high] opened: allowed_ports tcp/8001 on web-0001.parks (parks)"
        )
        assert message["Message-ID"].startswith("<fleetwatch-delivery-")
        assert "detail: tcp/8001 is open" in message.get_content()

    def test_a_hostile_subject_stays_on_one_header_line(
        self, harness: Make, smtp: SmtpReceiver, ca: TestCA, tmp_path: Path
    ) -> None:
        """A subject from an agent with line breaks cannot add headers to the mail."""
        units = [Unit("parks", emails=["it@parks.example"])]
        h = harness(smtp_table(tmp_path, smtp, ca), units)
        h.event("opened", unit="parks", host_id="h", rule="allowed_ports", severity="low",
                subject="tcp/1\r\nBcc: victim@evil.example\r\n\r\nbody")  # fmt: skip
        h.run()
        (message,) = smtp.messages
        assert message["Bcc"] is None
        assert smtp.box.envelopes[0][1] == ["it@parks.example"]
        assert "\n" not in message["Subject"]

    def test_a_wrong_password_is_a_failed_attempt_that_says_so(
        self, harness: Make, smtp: SmtpReceiver, ca: TestCA, tmp_path: Path
    ) -> None:
        """A refused login leaves the delivery pending, with the server's answer kept."""
        units = [Unit("parks", emails=["it@parks.example"])]
        h = harness(smtp_table(tmp_path, smtp, ca), units)
        (tmp_path / "smtp-password").write_text("wrong\n")
        h.events([opened(h, 1)])
        assert h.run().failed == 1
        (status,) = h.sender.status()
        assert status.target == "unit:parks"
        assert status.pending == 1
        assert "535" in (status.last_error or "")
        assert smtp.messages == []


class TestStorms:
    def test_a_storm_is_one_summary_per_unit_and_target(
        self,
        harness: Make,
        webhook: WebhookReceiver,
        smtp: SmtpReceiver,
        ca: TestCA,
        tmp_path: Path,
    ) -> None:
        """2,000 events of one pass for one unit are one summary to each of its targets;
        a unit with few events still gets one message each."""
        units = [Unit("parks", emails=["it@parks.example"]), Unit("schools")]
        text = smtp_table(tmp_path, smtp, ca) + hook_table(tmp_path, "hook", webhook.url)
        h = harness(text + route(), units)
        h.events([opened(h, n) for n in range(2000)] + [opened(h, 3000 + n, unit="schools")
                                                       for n in range(3)])  # fmt: skip
        result = h.run()
        assert result.events == 2003
        assert result.sent == 2 + 3  # parks: one summary to the hook, one mail; schools: 3
        summaries = [b for b in webhook.bodies() if b["type"] == "summary"]
        assert len(summaries) == 1
        assert summaries[0]["count"] == 2000
        assert summaries[0]["by_kind"] == {"opened": 2000}
        assert summaries[0]["omitted"] == 2000 - len(summaries[0]["events"])
        assert Counter(b["type"] for b in webhook.bodies()) == {"summary": 1, "event": 3}
        (mail,) = smtp.messages
        assert mail["Subject"] == "fleetwatch: 2000 events for unit parks (summary)"
        # every event is still recorded for its targets, carried by the summary
        with h.store.read() as conn:
            summary_id = int(webhook.received[0].headers["X-Fleetwatch-Delivery"])
            if webhook.bodies()[0]["type"] != "summary":
                summary_id = next(int(r.headers["X-Fleetwatch-Delivery"]) for r in webhook.received
                                  if r.json["type"] == "summary")  # fmt: skip
            assert len(h.store.deliveries.events_of(conn, summary_id)) == 2000


class TestDurability:
    def test_a_receiver_down_for_a_while_gets_every_message_once(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """Messages made while the receiver is down are retried with backoff and each
        arrives exactly once when it is back."""
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route(), notify_retry_first=10)
        webhook.stop()
        h.events([opened(h, n) for n in range(5)])
        first = h.run()
        assert (first.sent, first.failed) == (0, 1)  # a broken target is tried once a pass
        for _ in range(6):
            h.events([opened(h, 100 + len(webhook.received))])
            h.run(advance=7)
        (status,) = h.sender.status()
        assert status.state in {"retrying", "failing"}
        assert status.pending == 11
        webhook.start()
        for _ in range(20):
            h.run(advance=600)
        ids = [b["event"]["event_id"] for b in webhook.bodies()]
        assert len(ids) == 11
        assert len(set(ids)) == 11
        assert len(set(webhook.deliveries())) == 11
        assert all(r.signed for r in webhook.received)
        (status,) = h.sender.status()
        assert (status.state, status.pending, status.sent) == ("ok", 0, 11)

    def test_a_crash_between_send_and_commit_resends_with_the_same_key(
        self,
        harness: Make,
        webhook: WebhookReceiver,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """If the process dies after the receiver took a message but before it is marked
        sent, the next attempt carries the same delivery id and body, for the receiver to
        drop."""
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route())
        h.events([opened(h, 1)])
        real = h.store.deliveries.mark_sent

        def crash(*args: object) -> None:
            raise RuntimeError("killed before the commit")

        monkeypatch.setattr(h.store.deliveries, "mark_sent", crash)
        with pytest.raises(RuntimeError):
            h.run()
        monkeypatch.setattr(h.store.deliveries, "mark_sent", real)
        h.run()
        first, second = webhook.received
        assert first.headers["X-Fleetwatch-Delivery"] == second.headers["X-Fleetwatch-Delivery"]
        assert first.body == second.body

    def test_a_restart_loses_nothing_and_repeats_nothing(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """Deliveries recorded by one sender are sent by the next one on the same database,
        and the events already passed are not planned again."""
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route())
        webhook.stop()
        h.events([opened(h, n) for n in range(3)])
        h.run()  # planned, not sent
        h.sender.stop()
        again = harness(hook_table(tmp_path, "hook", webhook.url) + route())
        webhook.start()
        result = again.run(advance=3600)
        assert (result.events, result.sent) == (0, 3)
        assert sorted(b["event"]["finding_id"] for b in webhook.bodies()) == [0, 1, 2]

    def test_an_event_is_recorded_once_per_target(self, harness: Make, tmp_path: Path) -> None:
        """Recording the same event for the same target twice is refused by the database."""
        h = harness("")
        row = EventForTarget(1, "hook", "parks", h.now)
        with h.store.write() as conn:
            h.store.deliveries.record_events(conn, [row])
        with pytest.raises(IntegrityError), h.store.write() as conn:
            h.store.deliveries.record_events(conn, [row])

    def test_backoff_doubles_with_jitter_and_gives_up(self, harness: Make) -> None:
        """Each retry waits about twice as long as the one before (between half and all of
        the doubled delay), capped, and none is scheduled past the give-up time."""
        from dataclasses import replace

        from fleetwatch.collector.storage.deliveries import DeliveryRow

        h = harness("", notify_retry_first=10, notify_retry_max=100, notify_give_up_after=1000)
        row = DeliveryRow(1, "t", None, "event", {}, "pending", 0, h.now, h.now, None, None, None)
        for attempts, (low, high) in enumerate([(5, 10), (10, 20), (20, 40), (40, 80), (50, 100)]):
            waits = {
                (h.sender.retry_at(replace(row, attempts=attempts), h.now) - h.now).total_seconds()  # type: ignore[operator]
                for _ in range(50)
            }
            assert all(low <= w <= high for w in waits), (attempts, waits)
            assert len(waits) > 1  # jittered
        from datetime import timedelta

        assert h.sender.retry_at(row, h.now + timedelta(seconds=995)) is None


class TestDigests:
    def test_a_daily_unit_gets_one_digest_at_the_digest_time(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """A unit that chose a daily digest gets nothing at once, then one message with all
        its events after the day's digest time; routes that are immediate still are."""
        from datetime import UTC, datetime, time

        units = [Unit("parks", targets=["hook"], digest="daily")]
        h = harness(hook_table(tmp_path, "hook", webhook.url), units, notify_digest_time=time(7))
        h.now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
        h.events([opened(h, n) for n in range(3)])
        assert h.run().sent == 0
        h.events([opened(h, 3)])
        assert h.run(advance=3600 * 12).sent == 0  # 21:00, before the next digest time
        assert h.run(advance=3600 * 10 + 60).digests == 1  # 07:01 the next day
        (body,) = webhook.bodies()
        assert body["type"] == "digest"
        assert body["count"] == 4
        assert [e["finding_id"] for e in body["events"]] == [0, 1, 2, 3]
        assert h.run(advance=3600 * 24).digests == 0  # nothing new: no empty digest


class TestFormats:
    def test_alertmanager_and_slack_payloads(self, harness: Make, tmp_path: Path) -> None:
        """The Alertmanager target posts version-4 webhook JSON with one alert per event;
        the Slack target posts text with Slack's markup characters escaped."""
        am, slack = WebhookReceiver(None).start(), WebhookReceiver(None).start()
        try:
            text = hook_table(tmp_path, "am", am.url, kind="alertmanager")
            text += f'\n[targets.chat]\nkind = "slack"\nurl = "{slack.url}"\n'
            h = harness(text + route('"am", "chat"'))
            h.event("opened", unit="parks", host_id="web-01", rule="allowed_ports",
                    severity="high", subject="<!channel> & tcp/8081")  # fmt: skip
            h.event("resolved", unit="parks", host_id="web-01", rule="allowed_ports",
                    severity="high", subject="tcp/8081")  # fmt: skip
            h.run()
            first, second = am.bodies()
            assert first["version"] == "4"
            assert first["status"] == "firing"
            assert first["receiver"] == "am"
            (alert,) = first["alerts"]
            assert alert["labels"]["alertname"] == "fleetwatch_allowed_ports"
            assert alert["labels"]["host"] == "web-01"
            assert second["alerts"][0]["status"] == "resolved"
            assert "X-Fleetwatch-Signature" in am.received[0].headers  # signed: it has a secret
            text_out = slack.bodies()[0]["text"]
            assert "&lt;!channel&gt; &amp; tcp/8081" in text_out
            assert "<!channel>" not in text_out
        finally:
            am.stop()
            slack.stop()


class TestStatusAndTest:
    def test_a_target_that_keeps_failing_shows_as_failing(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """After notify_failing_after failed attempts the target's state is failing, with the
        error; an unused target is ok."""
        text = hook_table(tmp_path, "hook", webhook.url) + hook_table(
            tmp_path, "spare", webhook.url
        )
        h = harness(text + route(), notify_retry_first=1, notify_failing_after=3)
        webhook.status = 503
        h.events([opened(h, 1)])
        states = []
        for _ in range(3):
            h.run(advance=60)
            states.append({s.target: s.state for s in h.sender.status()}["hook"])
        assert states == ["retrying", "retrying", "failing"]
        hook, spare = h.sender.status()
        assert hook.last_error is not None
        assert "HTTP 503" in hook.last_error
        assert str(webhook.port) in hook.last_error
        assert (spare.state, spare.pending, spare.kind) == ("ok", 0, "webhook")

    def test_a_test_message_is_sent_now_and_says_what_happened(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """A test message goes to the target at once; a down target and an unknown name are
        answered with why."""
        h = harness(hook_table(tmp_path, "hook", webhook.url))
        ok = h.sender.send_test("hook")
        assert ok.ok
        assert "HTTP 200" in ok.detail
        assert webhook.bodies()[0]["type"] == "test"
        assert webhook.received[0].signed
        webhook.stop()
        down = h.sender.send_test("hook")
        assert not down.ok
        assert "ConnectionError" in down.detail
        unknown = h.sender.send_test("nope")
        assert not unknown.ok
        assert unknown.detail == "no target named 'nope' (known: hook)"


class TestPruning:
    def test_deliveries_done_with_are_pruned_after_retention(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """Sent deliveries older than notify_retention_days go, with their event records;
        pending ones stay however old, and nothing is planned again."""
        h = harness(hook_table(tmp_path, "hook", webhook.url) + route(), notify_retention_days=1)
        h.events([opened(h, 1)])
        h.run()
        webhook.stop()
        h.events([opened(h, 2)])
        h.run()
        assert h.sender.prune(h.now + timedelta(days=2)) == 1
        with h.store.read() as conn:
            (left,) = h.store.deliveries.for_target(conn, "hook")
            assert left.state == "pending"
            assert h.store.deliveries.events_of(conn, left.id) == [
                left.content["event"]["event_id"]
            ]
        assert h.run(advance=600).events == 0

    def test_a_message_that_cannot_be_made_does_not_hold_up_the_others(
        self, harness: Make, webhook: WebhookReceiver, tmp_path: Path
    ) -> None:
        """A delivery whose sending raises something unexpected is a failed attempt with the
        error kept; the messages after it are sent in the same pass."""
        from fleetwatch.collector.storage.deliveries import NewDelivery

        h = harness(hook_table(tmp_path, "hook", webhook.url) + route())
        with h.store.write() as conn:
            h.store.deliveries.add(
                conn, NewDelivery("hook", "parks", "event", {"type": "event"}, h.now)
            )
        h.events([opened(h, 1)])
        result = h.run()
        assert (result.sent, result.failed) == (1, 1)
        assert [b["event"]["finding_id"] for b in webhook.bodies()] == [1]
        (status,) = h.sender.status()
        assert status.last_error == "KeyError: 'event'"
