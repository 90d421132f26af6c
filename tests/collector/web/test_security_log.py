"""The security log: every refusal one line with who, what and why, never a secret; a flood
summed up instead of written; every refusal counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog
from structlog.testing import capture_logs

from fleetwatch.collector.refusals import (
    AlreadyEnrolled,
    HostMismatch,
    MissingToken,
    Refusal,
    UnknownToken,
)
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.answers import answer, status_of
from fleetwatch.collector.web.app import create_app
from fleetwatch.collector.web.security_log import LOGGER_NAME, MAX_CLIENTS, SecurityLog
from tests.collector.web.test_answers import STATUSES, _example
from tests.helpers import make_report

CLIENT = "203.0.113.7"  # an address of the documentation range: the client of every request
ADMIN = "admin-token-for-security-log-tests"
SECRET = "enroll-secret-for-security-log-tests"
GUESS = "guessed-secret-that-must-never-be-logged"
BODY_LIMIT = 64 * 1024
BODY_TIMEOUT = 0.5


def security_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("logger") == LOGGER_NAME]


def refused_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in security_lines(logs) if entry["event"] == "request refused"]


def summaries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in security_lines(logs) if entry["event"].startswith("suppressed")]


# -- the log itself ------------------------------------------------------------------------


class Clock:
    """Time that moves when a test says, and actions scheduled on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.scheduled: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self.scheduled.append((self.now + delay, action))

    def advance(self, seconds: float) -> None:
        """Move on, running what falls due meanwhile."""
        self.now += seconds
        due = [(at, action) for at, action in self.scheduled if at <= self.now]
        self.scheduled = [(at, action) for at, action in self.scheduled if at > self.now]
        for _, action in due:
            action()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def security_log(clock: Clock, lines: int = 3, interval: float = 60.0) -> SecurityLog:
    return SecurityLog(lines, interval, clock=clock, schedule=clock.schedule)


def refuse(log: SecurityLog, refusal: Refusal, client: str = CLIENT) -> None:
    log.refused(refusal, status_of(refusal), client=client, method="POST", path="/api/v1/report")


class TestSecurityLog:
    def test_a_refusal_is_one_line_with_who_what_and_why(self, clock: Clock) -> None:
        """The line names the client, method, path, reason, status and the hosts involved."""
        with capture_logs() as logs:
            refuse(security_log(clock), HostMismatch("web-01", "db-01"))
        assert refused_lines(logs) == [
            {
                "event": "request refused",
                "log_level": "warning",
                "logger": LOGGER_NAME,
                "reason": "host_mismatch",
                "status": 403,
                "client": CLIENT,
                "method": "POST",
                "path": "/api/v1/report",
                "claimed_host": "db-01",
                "token_host": "web-01",
            }
        ]

    def test_a_long_path_is_cut(self, clock: Clock) -> None:
        """A path is the client's to choose: only its start is written."""
        with capture_logs() as logs:
            security_log(clock).refused(
                MissingToken(), 401, client=CLIENT, method="GET", path="/" + "a" * 10_000
            )
        assert len(refused_lines(logs)[0]["path"]) == 200

    def test_at_most_the_stated_lines_per_reason_then_a_summary(self, clock: Clock) -> None:
        """Past the limit, refusals are counted, and summed up when the interval ends."""
        log = security_log(clock, lines=3)
        with capture_logs() as logs:
            for _ in range(10):
                refuse(log, UnknownToken())
            assert len(refused_lines(logs)) == 3
            assert summaries(logs) == []
            clock.advance(60)
        (summary,) = summaries(logs)
        assert summary["event"] == (
            "suppressed 7 refusals of reason unknown_token in the last 60 seconds"
        )
        assert summary["suppressed"] == 7
        assert summary["clients"] == [(CLIENT, 7)]

    def test_a_new_interval_writes_again_and_sums_up_the_last_once(self, clock: Clock) -> None:
        """The first refusal after an interval ends sums it up; the timer then adds nothing."""
        log = security_log(clock, lines=2)
        with capture_logs() as logs:
            for _ in range(5):
                refuse(log, UnknownToken())
            clock.now += 61  # the timer has not run yet
            refuse(log, UnknownToken())
            clock.advance(0)
            clock.advance(120)
        assert len(refused_lines(logs)) == 3
        assert [s["suppressed"] for s in summaries(logs)] == [3]

    def test_each_reason_has_its_own_limit(self, clock: Clock) -> None:
        """A flood of unknown tokens does not hide a forged report."""
        log = security_log(clock, lines=2)
        with capture_logs() as logs:
            for _ in range(100):
                refuse(log, UnknownToken())
            refuse(log, HostMismatch("web-01", "db-01"))
        assert [e["reason"] for e in refused_lines(logs)] == [
            "unknown_token",
            "unknown_token",
            "host_mismatch",
        ]

    def test_a_summary_names_the_loudest_addresses(self, clock: Clock) -> None:
        """The summary says who sent most of what was left out, loudest first."""
        log = security_log(clock, lines=0)
        with capture_logs() as logs:
            for n in range(1, 8):
                for _ in range(n):
                    refuse(log, UnknownToken(), client=f"198.51.100.{n}")
            clock.advance(60)
        (summary,) = summaries(logs)
        assert summary["clients"] == [(f"198.51.100.{n}", n) for n in (7, 6, 5, 4, 3)]

    def test_addresses_told_apart_are_bounded(self, clock: Clock) -> None:
        """A flood from many addresses counts the ones past the bound as "other"."""
        log = security_log(clock, lines=0)
        with capture_logs() as logs:
            for n in range(MAX_CLIENTS + 500):
                refuse(log, UnknownToken(), client=f"2001:db8::{n:x}")
            refuse(log, UnknownToken(), client="2001:db8::ffff:1")
            clock.advance(60)
        (summary,) = summaries(logs)
        assert summary["suppressed"] == MAX_CLIENTS + 501
        assert summary["clients"][0] == ("other", 501)

    def test_a_flood_of_ten_thousand_writes_the_stated_lines_and_summaries(
        self, clock: Clock
    ) -> None:
        """10,000 refusals over five intervals: 20 lines and one summary per interval."""
        log = security_log(clock, lines=20, interval=60)
        with capture_logs() as logs:
            for i in range(10_000):
                refuse(log, UnknownToken())
                if i % 2000 == 1999:
                    clock.advance(60)
        assert len(refused_lines(logs)) == 5 * 20
        assert sum(s["suppressed"] for s in summaries(logs)) == 10_000 - 100
        assert len(summaries(logs)) == 5
        assert log.snapshot().by_reason == {"unknown_token": 10_000}

    def test_every_refusal_is_counted_written_or_not(self, clock: Clock) -> None:
        """The counters count every refusal by reason and by status, and those left out."""
        log = security_log(clock, lines=1)
        with capture_logs():
            for _ in range(3):
                refuse(log, UnknownToken())
            refuse(log, MissingToken())
            refuse(log, HostMismatch("web-01", "db-01"))
            refuse(log, AlreadyEnrolled())
        counts = log.snapshot()
        assert counts.by_reason == {
            "unknown_token": 3,
            "missing_token": 1,
            "host_mismatch": 1,
            "already_enrolled": 1,
        }
        assert counts.by_status == {401: 4, 403: 1, 409: 1}
        assert counts.suppressed == {"unknown_token": 2}

    def test_closing_sums_up_what_is_pending(self, clock: Clock) -> None:
        """A collector that stops writes the summaries of intervals still open."""
        log = security_log(clock, lines=1)
        with capture_logs() as logs:
            for _ in range(4):
                refuse(log, UnknownToken())
            clock.now += 10
            log.close()
            clock.advance(60)  # the timer then finds nothing to add
        assert [(s["suppressed"], s["seconds"]) for s in summaries(logs)] == [(3, 10)]

    def test_counting_is_thread_safe(self) -> None:
        """Refusals counted from many threads at once all count; the limit holds."""
        log = SecurityLog(lines=5, interval=3600)
        threads = [
            threading.Thread(target=lambda: [refuse(log, UnknownToken()) for _ in range(2000)])
            for _ in range(8)
        ]
        with capture_logs() as logs:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            log.close()
        assert log.snapshot().by_reason == {"unknown_token": 16_000}
        assert len(refused_lines(logs)) == 5
        assert summaries(logs)[0]["suppressed"] == 16_000 - 5

    def test_the_summary_comes_by_itself_when_the_flood_stops(self) -> None:
        """With the real timer, the summary is written at the end of the interval."""
        log = SecurityLog(lines=1, interval=0.2)
        with capture_logs() as logs:
            for _ in range(3):
                refuse(log, UnknownToken())
            for _ in range(100):
                if summaries(logs):
                    break
                threading.Event().wait(0.05)
        assert [s["suppressed"] for s in summaries(logs)] == [2]


# -- every refusal, through the doors ------------------------------------------------------


class Collector:
    """A collector application driven through its ASGI interface by a client at CLIENT."""

    def __init__(self, http: httpx2.AsyncClient, security: SecurityLog) -> None:
        self.http = http
        self.security = security
        self.host_token = ""

    async def enroll(self, host_id: str, secret: str) -> httpx2.Response:
        return await self.http.post(
            "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": secret}
        )

    async def report(self, token: str, body: Any) -> httpx2.Response:
        return await self.http.post(
            "/api/v1/report", content=body, headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def collector(database_url: str, tmp_path: Path) -> AsyncIterator[Collector]:
    settings = CollectorSettings(
        database_url=database_url,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        max_body_bytes=BODY_LIMIT,
        body_timeout=BODY_TIMEOUT,
        host_burst=2,
        host_rate=0.001,
    )
    app = create_app(settings)
    transport = httpx2.ASGITransport(app, client=(CLIENT, 40000))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://collector") as http,
    ):
        collector = Collector(http, app.state.security_log)
        collector.host_token = (await collector.enroll("web-01", SECRET)).json()["token"]
        yield collector


def report_body(host_id: str, sequence: int = 1) -> bytes:
    return httpx2.Request("POST", "/", json=make_report(host_id, sequence, {})).read()


async def _slowly(first: bytes) -> AsyncIterator[bytes]:
    yield first
    await asyncio.sleep(BODY_TIMEOUT * 4)
    yield b"}"


@pytest.mark.anyio
class TestRefusalsAreLogged:
    async def _only_line(self, collector: Collector, request: Any, status: int) -> dict[str, Any]:
        with capture_logs() as logs:
            response = await request
        assert response.status_code == status, response.text
        (line,) = refused_lines(logs)
        assert line["status"] == status
        assert line["client"] == CLIENT
        assert GUESS not in repr(logs)
        assert collector.host_token not in repr(logs)
        return line

    async def test_a_forged_report(self, collector: Collector) -> None:
        """A host reporting as another: 403, both hosts named."""
        line = await self._only_line(
            collector, collector.report(collector.host_token, report_body("db-01")), 403
        )
        assert line["reason"] == "host_mismatch"
        assert (line["method"], line["path"]) == ("POST", "/api/v1/report")
        assert (line["claimed_host"], line["token_host"]) == ("db-01", "web-01")

    async def test_an_unknown_token(self, collector: Collector) -> None:
        """A token no one issued: 401, and the token is not written."""
        line = await self._only_line(
            collector, collector.report(f"fwh_{GUESS}", report_body("web-01")), 401
        )
        assert line["reason"] == "unknown_token"
        assert line["claimed_host"] is None

    async def test_a_wrong_enrollment_secret(self, collector: Collector) -> None:
        """Guessing the enrollment secret: 403 for the host claimed, the guess not written."""
        line = await self._only_line(collector, collector.enroll("web-02", GUESS), 403)
        assert line["reason"] == "enroll_secret_rejected"
        assert (line["method"], line["path"]) == ("POST", "/api/v1/enroll")
        assert line["claimed_host"] == "web-02"

    async def test_enrolling_an_enrolled_host_again(self, collector: Collector) -> None:
        """The right secret for a host already enrolled: 409, the host named, no secret."""
        with capture_logs() as logs:
            response = await collector.enroll("web-01", SECRET)
        assert response.status_code == 409
        (line,) = refused_lines(logs)
        assert (line["reason"], line["claimed_host"]) == ("already_enrolled", "web-01")
        assert SECRET not in repr(logs)

    async def test_an_oversized_body(self, collector: Collector) -> None:
        """A body over the limit: 413."""
        body = b"x" * (BODY_LIMIT + 1)
        line = await self._only_line(collector, collector.report(collector.host_token, body), 413)
        assert line["reason"] == "body_too_large"

    async def test_a_host_reporting_too_often(self, collector: Collector) -> None:
        """A host over its rate: 429, the host named."""
        for sequence in (1, 2):
            stored = await collector.report(collector.host_token, report_body("web-01", sequence))
            assert stored.status_code == 200
        line = await self._only_line(
            collector, collector.report(collector.host_token, report_body("web-01", 3)), 429
        )
        assert (line["reason"], line["token_host"]) == ("host_rate_limited", "web-01")

    async def test_a_slow_body(self, collector: Collector) -> None:
        """A body that does not arrive in time: 408."""
        line = await self._only_line(
            collector, collector.report(collector.host_token, _slowly(b'{"schema_version": 1')), 408
        )
        assert line["reason"] == "body_too_slow"

    async def test_an_api_call_without_admin_rights(self, collector: Collector) -> None:
        """The FastAPI door logs alike: a read token asking for an admin action."""
        created = await collector.http.post(
            "/api/v1/tokens",
            json={"name": "reader", "kind": "read"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        reader = created.json()["token"]
        with capture_logs() as logs:
            response = await collector.http.post(
                "/api/v1/policy/reload", headers={"Authorization": f"Bearer {reader}"}
            )
        assert response.status_code == 403
        (line,) = refused_lines(logs)
        assert (line["reason"], line["path"]) == ("admin_required", "/api/v1/policy/reload")
        assert reader not in repr(logs)
        assert ADMIN not in repr(logs)

    async def test_a_flood_is_summed_up_and_counted(self, collector: Collector) -> None:
        """10,000 unknown tokens: the stated lines, one summary at the end, all counted."""
        lines = collector.security.lines
        with capture_logs() as logs:
            for _ in range(10_000):
                response = await collector.http.post(
                    "/api/v1/report", headers={"Authorization": f"Bearer {GUESS}"}
                )
                assert response.status_code == 401
            collector.security.close()
        assert len(refused_lines(logs)) == lines
        (summary,) = summaries(logs)
        assert summary["suppressed"] == 10_000 - lines
        assert summary["clients"] == [(CLIENT, 10_000 - lines)]
        assert collector.security.snapshot().by_reason["unknown_token"] == 10_000
        assert GUESS not in repr(logs)


class TestEveryRefusal:
    @pytest.mark.parametrize("cls", list(STATUSES), ids=lambda cls: cls.__name__)
    def test_sending_an_answer_logs_it_once(self, cls: type[Refusal]) -> None:
        """Whatever the refusal, sending its answer writes one line with its reason."""
        security = SecurityLog()

        class App:
            class state:  # noqa: N801  (stands for an application's `state`)
                security_log = security

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/x",
            "raw_path": b"/x",
            "client": (CLIENT, 1),
            "app": App(),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        refusal = _example(cls)
        with capture_logs() as logs:
            asyncio.run(answer(refusal)(scope, receive, send))
        (line,) = refused_lines(logs)
        assert (line["reason"], line["status"]) == (cls.reason, STATUSES[cls])
        assert sent[0]["status"] == STATUSES[cls]
        assert security.snapshot().by_reason == {cls.reason: 1}


def test_logger_resolves_configuration_at_each_line() -> None:
    """A log made before logging is configured writes with the configuration in force."""
    log = SecurityLog()
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    with capture_logs() as logs:
        log.refused(MissingToken(), 401, client=None, method="GET", path="/")
    assert len(refused_lines(logs)) == 1
