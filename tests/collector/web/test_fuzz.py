"""Fuzzing the API: every operation of the published OpenAPI document, and mutated reports,
never get a 5xx and never crash the collector."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.helpers import BASE_REPORT, make_report

ADMIN = "admin-token-for-fuzzing"
SECRET = "fuzz-enroll-secret"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    directory = tmp_path_factory.mktemp("fuzz")
    policy = directory / "policy.toml"
    policy.write_text('[defaults]\nallowed_ports = ["tcp/22"]\n[hosts."fuzz-01"]\nunit = "u"\n')
    app = create_app(
        CollectorSettings(
            database_url=f"sqlite:///{directory / 'fuzz.db'}",
            policy=policy,
            admin_token=ADMIN,
            enroll_secret=SECRET,
            data_dir=directory,
            host_rate=1e6,
            host_burst=10**6,
            enroll_rate=1e6,
            enroll_burst=10**6,
        )
    )
    with TestClient(app) as client:  # runs start-up: migrations, writer thread
        token = client.post(
            "/api/v1/enroll", json={"host_id": "fuzz-01", "enroll_secret": SECRET}
        ).json()["token"]
        assert (
            client.post(
                "/api/v1/report",
                json=make_report("fuzz-01", 1),
                headers={"Authorization": f"Bearer {token}"},
            ).status_code
            == 200
        )
        yield client, token


@pytest.fixture(scope="module")
def api_schema(collector: tuple[TestClient, str]) -> Any:
    app = collector[0].app

    async def without_lifespan(scope: Any, receive: Any, send: Any) -> None:
        """The app, its start-up and shutdown left to the fixture that owns it."""
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    return schemathesis.openapi.from_asgi("/openapi.json", without_lifespan)


def test_no_operation_answers_5xx(api_schema: Any, collector: tuple[TestClient, str]) -> None:
    """Requests generated from the published OpenAPI document, for every operation (as an
    admin, as the host, and with no token), never get a 5xx."""
    _, token = collector
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            for auth in (ADMIN, token, None):
                headers = {"Authorization": f"Bearer {auth}"} if auth else {}
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    case.operation.label,
                    response.status_code,
                    response.text[:300],
                )

        check()


@pytest.fixture
def fresh_host(collector: tuple[TestClient, str]) -> tuple[str, str]:
    """A host of its own for one test, with its token: the operation fuzzing before may
    legitimately have revoked fuzz-01's tokens (an admin may revoke any host, and
    schemathesis reuses host ids it saw in answers)."""
    client, _ = collector
    host_id = f"fuzz-{uuid.uuid4().hex[:12]}"
    answer = client.post("/api/v1/enroll", json={"host_id": host_id, "enroll_secret": SECRET})
    assert answer.status_code == 200, answer.text
    return host_id, answer.json()["token"]


def _mutations() -> st.SearchStrategy[Any]:
    """Reports with a field replaced by a random JSON value."""
    paths = [
        ("sequence",),
        ("collected_at",),
        ("agent_version",),
        ("schema_version",),
        ("sections", "ports", "data", "listeners"),
        ("sections", "system", "data"),
        ("sections", "packages", "data", "packages"),
        ("sections",),
        ("delivery",),
        ("sections", "updates"),
        ("instance_id",),
    ]
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    return st.tuples(st.sampled_from(paths), json_values)


@given(mutation=_mutations(), sequence=st.integers(min_value=2, max_value=10**9))
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_mutated_reports_get_an_answer_not_an_error(
    collector: tuple[TestClient, str],
    fresh_host: tuple[str, str],
    mutation: tuple[tuple[str, ...], Any],
    sequence: int,
) -> None:
    client, _ = collector
    host_id, token = fresh_host
    body = json.loads(json.dumps(BASE_REPORT))
    body["host_id"] = host_id
    body["sequence"] = sequence
    path, value = mutation
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    response = client.post(
        "/api/v1/report",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code < 500, response.text[:300]
    assert response.status_code in {200, 400, 403, 422}, response.text[:300]


@given(body=st.binary(max_size=2000))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_bytes_are_refused(
    collector: tuple[TestClient, str], fresh_host: tuple[str, str], body: bytes
) -> None:
    client, _ = collector
    _, token = fresh_host
    response = client.post(
        "/api/v1/report", content=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code in {400, 422}, response.text[:300]


def test_the_published_document_describes_the_agent_bodies(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    assert "Report" in raw["components"]["schemas"]
    assert Path("/api/v1/report").as_posix() in raw["paths"]
