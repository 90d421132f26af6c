"""Refusals become HTTP answers in one place, the same for both doors."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from fleetwatch.collector import refusals
from fleetwatch.collector.refusals import (
    DatabaseUnavailable,
    HostMismatch,
    HostRateLimited,
    Refusal,
    SchemaViolation,
)
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.answers import RETRY_AFTER, answer, as_refusal
from fleetwatch.collector.web.app import create_app

# Every refusal and the status it is answered with: a new refusal must be added here.
STATUSES: dict[type[Refusal], int] = {
    refusals.InvalidBody: 400,
    refusals.BodyNotJson: 400,
    refusals.BodyNotGzip: 400,
    refusals.BodyIncomplete: 400,
    refusals.UnsupportedSchemaVersion: 400,
    refusals.BadRequest: 400,
    refusals.InvalidCursor: 400,
    refusals.OffsetPaging: 400,
    refusals.Unauthenticated: 401,
    refusals.MissingToken: 401,
    refusals.UnknownToken: 401,
    refusals.HostNotEnrolled: 401,
    refusals.Forbidden: 403,
    refusals.HostMismatch: 403,
    refusals.AdminRequired: 403,
    refusals.FleetReaderRequired: 403,
    refusals.FormTokenRejected: 403,
    refusals.EnrollSecretRejected: 403,
    refusals.EnrollUnitMismatch: 403,
    refusals.NotFound: 404,
    refusals.NoSuchHost: 404,
    refusals.NoSuchToken: 404,
    refusals.NoSuchSession: 404,
    refusals.TooSlow: 408,
    refusals.BodyTooSlow: 408,
    refusals.Conflict: 409,
    refusals.AlreadyEnrolled: 409,
    refusals.TooLarge: 413,
    refusals.BodyTooLarge: 413,
    refusals.UnsupportedEncoding: 415,
    refusals.Unprocessable: 422,
    refusals.SchemaViolation: 422,
    refusals.InvalidRequest: 422,
    refusals.AdminTokenWithUnit: 422,
    refusals.TooManyRequests: 429,
    refusals.HostRateLimited: 429,
    refusals.EnrollRateLimited: 429,
    refusals.RotationRateLimited: 429,
    refusals.AdminWriteRateLimited: 429,
    refusals.Unavailable: 503,
    refusals.Overloaded: 503,
    refusals.DatabaseUnavailable: 503,
    refusals.ResponderRequired: 403,
    refusals.NoSuchFinding: 404,
    refusals.NoSuchWaiver: 404,
    refusals.NoSuchUnit: 404,
    refusals.FindingClosed: 409,
    refusals.WaiverNotInForce: 409,
    refusals.InvalidWaiver: 422,
    refusals.RespondTokenWithoutUnit: 422,
}


def _every_refusal() -> list[type[Refusal]]:
    return [
        cls
        for _, cls in inspect.getmembers(refusals, inspect.isclass)
        if issubclass(cls, Refusal) and cls is not Refusal
    ]


def _example(cls: type[Refusal]) -> Refusal:
    if cls is HostMismatch:
        return HostMismatch("web-01", "web-02")
    return cls("why")


def _answer(refusal: Refusal) -> tuple[int, dict[str, str], Any]:
    response = answer(refusal)
    headers = dict(response.headers.items())
    return response.status_code, headers, json.loads(response.body)


class TestRefusalTree:
    def test_every_refusal_has_a_status(self) -> None:
        """The table above lists every refusal the domain can raise."""
        assert set(_every_refusal()) == set(STATUSES)

    def test_every_refusal_names_its_own_reason(self) -> None:
        """Each refusal has a reason of its own, for logs and metrics to count it by."""
        reasons = [cls.reason for cls in _every_refusal()]
        assert all("reason" in vars(cls) for cls in _every_refusal())
        assert len(set(reasons)) == len(reasons)

    def test_the_domain_does_not_know_http(self) -> None:
        """Refusals, identity, ingestion and body reading import no web framework."""
        modules = [
            "refusals",
            "auth.identity",
            "ingest.parse",
            "ingest.queue",
            "ingest.writer",
            "web.bodies",
        ]
        code = (
            "import sys\n"
            + "".join(f"import fleetwatch.collector.{m}\n" for m in modules)
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette'}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"


class TestAnswer:
    @pytest.mark.parametrize("cls", list(STATUSES), ids=lambda cls: cls.__name__)
    def test_each_refusal_maps_to_its_status(self, cls: type[Refusal]) -> None:
        """The status of a refusal is that of its kind, with the detail as the body."""
        refusal = _example(cls)
        status, _, body = _answer(refusal)
        assert status == STATUSES[cls]
        assert body == {"detail": refusal.detail}

    @pytest.mark.parametrize("cls", list(STATUSES), ids=lambda cls: cls.__name__)
    def test_401_challenges_for_a_bearer_token(self, cls: type[Refusal]) -> None:
        """Every 401, and only a 401, carries WWW-Authenticate: Bearer."""
        status, headers, _ = _answer(_example(cls))
        assert (headers.get("www-authenticate") == "Bearer") == (status == 401)

    @pytest.mark.parametrize("cls", list(STATUSES), ids=lambda cls: cls.__name__)
    def test_unavailable_says_when_to_retry(self, cls: type[Refusal]) -> None:
        """A 503 tells the caller to retry after RETRY_AFTER seconds; others say nothing."""
        status, headers, _ = _answer(_example(cls))
        expected = str(RETRY_AFTER) if status == 503 else None
        assert headers.get("retry-after") == expected

    def test_a_rate_limit_says_when_to_retry(self) -> None:
        """A refusal's own retry-after, whole seconds, is the Retry-After header."""
        _, headers, _ = _answer(HostRateLimited("too often", retry_after=3.0))
        assert headers["retry-after"] == "3"

    def test_a_fractional_retry_after_is_rounded_up(self) -> None:
        """Retry-After is never sooner than the refusal said, and never 0."""
        assert _answer(refusals.Overloaded(retry_after=2.1))[1]["retry-after"] == "3"
        assert _answer(refusals.Overloaded(retry_after=0.2))[1]["retry-after"] == "1"

    def test_a_list_of_errors_is_the_detail(self) -> None:
        """Validation errors are answered as the list they are."""
        errors = [{"loc": ["host_id"], "msg": "bad", "type": "string_pattern_mismatch"}]
        assert _answer(SchemaViolation(errors))[2] == {"detail": errors}

    @pytest.mark.parametrize(
        "error",
        [
            OperationalError("SELECT 1", {}, Exception("connection refused")),
            PoolTimeoutError("QueuePool limit reached"),
        ],
    )
    def test_database_errors_are_database_unavailable(self, error: Exception) -> None:
        """A database that does not answer is a 503 to retry, whichever door asked."""
        refusal = as_refusal(error)
        assert isinstance(refusal, DatabaseUnavailable)
        assert _answer(refusal)[0] == 503

    def test_a_refusal_stands_for_itself(self) -> None:
        """A refusal needs no translation before it is answered."""
        refusal = HostMismatch("web-01", "web-02")
        assert as_refusal(refusal) is refusal


ADMIN = "admin-token-for-answer-tests"
BODY_LIMIT = CollectorSettings.model_fields["max_api_body_bytes"].default
SECRET = "enroll-secret-for-answer-tests"


class Doors:
    """The report door (plain ASGI) and the FastAPI door of one collector."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.service = client.app.state.service  # type: ignore[attr-defined]
        response = client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": SECRET}
        )
        self.host_token = response.json()["token"]

    def report(self, body: bytes, token: str | None = None, **headers: str) -> Any:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.post("/api/v1/report", content=body, headers={**auth, **headers})

    def enroll(self, body: bytes, **headers: str) -> Any:
        return self.client.post("/api/v1/enroll", content=body, headers=headers)


@pytest.fixture
def doors(database_url: str, tmp_path: Path) -> Iterator[Doors]:
    settings = CollectorSettings(
        database_url=database_url,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        max_body_bytes=BODY_LIMIT,  # both doors then refuse the same sizes alike
    )
    with TestClient(create_app(settings)) as client:
        yield Doors(client)


def _same(one: Any, other: Any) -> None:
    def seen(response: Any) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            k: v
            for k, v in response.headers.items()
            if k in {"content-type", "www-authenticate", "retry-after"}
        }
        return response.status_code, response.content, headers

    assert seen(one) == seen(other)


class TestBothDoors:
    def test_a_missing_token_is_answered_alike(self, doors: Doors) -> None:
        """No bearer token: the same 401, challenge and bytes on /report and on /hosts."""
        on_report = doors.report(b"{}")
        on_hosts = doors.client.get("/api/v1/hosts", headers={"Authorization": "Basic x"})
        _same(on_report, on_hosts)
        assert on_report.status_code == 401
        assert on_report.headers["www-authenticate"] == "Bearer"

    def test_an_unavailable_database_is_answered_alike(
        self, doors: Doors, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The database down while checking a token: the same 503 and Retry-After."""
        down = OperationalError("SELECT 1", {}, Exception("connection refused"))

        def fail(*args: Any) -> None:
            raise down

        doors.service.identity._host_tokens.clear()
        monkeypatch.setattr(doors.service.identity, "host_for", fail)
        monkeypatch.setattr(doors.service.identity, "principal_for", fail)
        on_report = doors.report(b"{}", doors.host_token)
        on_hosts = doors.client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {ADMIN}"})
        _same(on_report, on_hosts)
        assert on_report.status_code == 503
        assert on_report.headers["retry-after"] == str(RETRY_AFTER)

    def test_a_body_over_the_limit_is_answered_alike(self, doors: Doors) -> None:
        """The same body reader refuses the same oversized body in both doors alike."""
        body = b"x" * (BODY_LIMIT + 1)
        on_report = doors.report(body, doors.host_token)
        _same(on_report, doors.enroll(body))
        assert on_report.status_code == 413

    def test_an_unsupported_encoding_is_answered_alike(self, doors: Doors) -> None:
        """A body compressed in a way we do not read: the same 415 in both doors."""
        body = b'{"host_id": "web-01"}'
        on_report = doors.report(body, doors.host_token, **{"Content-Encoding": "br"})
        on_enroll = doors.enroll(body, **{"Content-Encoding": "br"})
        _same(on_report, on_enroll)
        assert on_report.status_code == 415
