"""The front door: the caller is checked from the headers before a byte of the body is read,
and every body but a report's is bounded in size and in time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import API_ROUTES, create_app
from fleetwatch.collector.web.bearer import Access, admin_write, responder
from fleetwatch.collector.web.front_door import FrontDoor

ADMIN = "admin-token-for-front-door-tests"
SECRET = "enroll-secret-for-front-door-tests"
LIMIT = 64 * 1024
HUGE = str(400 * 1024 * 1024)


@dataclass
class Exchange:
    """What the app answered, and how many body chunks it took from the client."""

    status: int
    headers: dict[str, str]
    body: Any
    taken: int


class Door:
    """The collector's ASGI application called directly, with a client that counts what of
    its body is taken."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.service = client.app.state.service  # type: ignore[attr-defined]

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        chunks: list[bytes] | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Exchange:
        all_headers = {**(headers or {})}
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        assert self.client.portal is not None
        # a request without a body still gets one (empty) body message, as from uvicorn
        body = chunks or [b""]
        return self.client.portal.call(self._call, method, path, all_headers, body, delay)

    async def _call(
        self, method: str, path: str, headers: dict[str, str], chunks: list[bytes], delay: float
    ) -> Exchange:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8470),
        }
        taken = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal taken
            if taken >= len(chunks):
                return {"type": "http.disconnect"}
            await asyncio.sleep(delay)
            taken += 1
            return {
                "type": "http.request",
                "body": chunks[taken - 1],
                "more_body": taken < len(chunks),
            }

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.client.app(scope, receive, send)
        start = sent[0]
        answer = b"".join(m.get("body", b"") for m in sent[1:])
        return Exchange(
            status=start["status"],
            headers={k.decode(): v.decode() for k, v in start["headers"]},
            body=json.loads(answer) if answer else None,
            taken=taken,
        )


@pytest.fixture
def door(database_url: str, tmp_path: Path) -> Iterator[Door]:
    settings = CollectorSettings(
        database_url=database_url,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        body_timeout=0.5,
    )
    with TestClient(create_app(settings)) as client:
        yield Door(client)


def huge(content_type: str = "application/json") -> dict[str, str]:
    return {"content-length": HUGE, "content-type": content_type}


BODY = [b'{"name": "x", "kind": "read"}']
JSON = {"content-type": "application/json"}
ADMIN_WRITES = [
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/hosts/web-01/allow-reenroll"),
    ("POST", "/api/v1/hosts/web-01/revoke"),
    ("POST", "/api/v1/policy/reload"),
    ("DELETE", "/api/v1/tokens/1"),
    ("DELETE", "/api/v1/sessions/1"),
    ("POST", "/api/v1/notifications/targets/hook/test"),
    ("POST", "/api/v1/waivers"),
    ("POST", "/api/v1/waivers/1/revoke"),
]
# changes to a finding's case: an admin's, or a respond token's within its unit
RESPONDER_WRITES = [
    ("POST", "/api/v1/findings/1/acknowledge"),
    ("POST", "/api/v1/findings/1/due"),
]


class TestTheCallerBeforeTheBody:
    @pytest.mark.parametrize(("method", "path"), [*ADMIN_WRITES, ("POST", "/api/v1/token/rotate")])
    def test_no_token_is_refused_before_the_body(self, door: Door, method: str, path: str) -> None:
        """No token: 401 from the headers alone, not a byte of the 400 MB body taken, and the
        connection closed rather than drained."""
        answer = door.call(method, path, chunks=BODY, headers=huge())
        assert answer.status == 401
        assert answer.taken == 0
        assert answer.headers["connection"] == "close"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.body == {"detail": "missing bearer token (Authorization: Bearer <token>)"}

    def test_an_unknown_token_is_refused_before_the_body(self, door: Door) -> None:
        """A token that is not an API token: 401, as before, without the body."""
        answer = door.call("POST", "/api/v1/tokens", "fwa_unknown", BODY, huge())
        assert (answer.status, answer.taken) == (401, 0)
        assert answer.body == {"detail": "API token not accepted"}

    def test_a_host_token_cannot_post_as_an_admin(self, door: Door) -> None:
        """A host token on an admin endpoint is no API token: 401 before the body."""
        host_token = door.client.post(
            "/api/v1/enroll", json={"host_id": "web-01", "enroll_secret": SECRET}
        ).json()["token"]
        answer = door.call("POST", "/api/v1/tokens", host_token, BODY, huge())
        assert (answer.status, answer.taken) == (401, 0)

    def test_a_read_token_is_refused_before_the_body(self, door: Door) -> None:
        """A read token where the route needs an admin: 403 before the body."""
        reader = door.client.post(
            "/api/v1/tokens",
            json={"name": "r", "kind": "read"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()["token"]
        answer = door.call("POST", "/api/v1/tokens", reader, BODY, huge())
        assert (answer.status, answer.taken) == (403, 0)
        assert answer.body == {"detail": "this needs an admin token"}

    def test_the_caller_is_looked_up_once(
        self, door: Door, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The door resolves the token; the route's dependencies take it from the scope."""
        calls: list[str] = []
        lookup = door.service.identity.principal_for

        def counted(token: str) -> Any:
            calls.append(token)
            return lookup(token)

        monkeypatch.setattr(door.service.identity, "principal_for", counted)
        answer = door.call("POST", "/api/v1/tokens", ADMIN, BODY, JSON)
        assert answer.status == 200
        assert calls == [ADMIN]

    def test_public_endpoints_need_no_token(self, door: Door) -> None:
        assert door.call("GET", "/healthz").status == 200
        assert door.call("GET", "/openapi.json").status == 200


class TestBodyLimits:
    def test_a_body_declared_too_large_is_refused_unread(self, door: Door) -> None:
        """An admin's Content-Length over max_api_body_bytes: 413 before a byte is taken."""
        answer = door.call("POST", "/api/v1/tokens", ADMIN, BODY, huge())
        assert (answer.status, answer.taken) == (413, 0)
        assert answer.headers["connection"] == "close"
        assert answer.body == {
            "detail": f"request body of {HUGE} bytes is over the limit of {LIMIT} bytes"
        }

    def test_a_body_sent_too_large_is_cut_at_the_limit(self, door: Door) -> None:
        """No Content-Length, and more than the limit sent: 413 at the first chunk past it;
        nothing after it is taken."""
        chunks = [b" " * (16 * 1024)] * 100
        answer = door.call(
            "POST", "/api/v1/tokens", ADMIN, chunks, {"transfer-encoding": "chunked"}
        )
        assert answer.status == 413
        assert answer.taken == LIMIT // (16 * 1024) + 1

    def test_a_slow_body_is_cut_at_body_timeout(self, door: Door) -> None:
        """An admin body that trickles in: 408 once body_timeout has passed."""
        chunks = [b" "] * 100
        answer = door.call(
            "POST", "/api/v1/tokens", ADMIN, chunks, {"content-length": "100"}, delay=0.1
        )
        assert answer.status == 408
        assert answer.body == {"detail": "request body not received within 0.5 s"}
        assert answer.taken < 10

    def test_enrollment_bodies_are_bounded_too(self, door: Door) -> None:
        """Enrollment needs no token (its secret is in the body), and its body is bounded
        alike."""
        answer = door.call("POST", "/api/v1/enroll", chunks=BODY, headers=huge())
        assert (answer.status, answer.taken) == (413, 0)

    def test_a_body_within_the_limits_reaches_the_route(self, door: Door) -> None:
        """What the door read is what the route parses."""
        body = json.dumps({"name": "within", "kind": "read", "unit": "parks"}).encode()
        answer = door.call(
            "POST",
            "/api/v1/tokens",
            ADMIN,
            [body[:10], body[10:]],
            {"content-type": "application/json"},
        )
        assert answer.status == 200
        assert (answer.body["name"], answer.body["unit"]) == ("within", "parks")


def _operations(door: Door) -> list[tuple[str, str]]:
    document = door.client.get("/openapi.json").json()
    return [
        (
            method.upper(),
            path.replace("{host_id}", "web-01")
            .replace("{token_id}", "1")
            .replace("{session_id}", "1"),
        )
        for path, methods in document["paths"].items()
        for method in methods
        if path.startswith("/api/v1/")
    ]


class TestEveryRouteIsGuarded:
    def test_every_api_operation_is_checked_at_the_door(self, door: Door) -> None:
        """Every operation under /api/v1 but enrollment and the report (which has a door of
        its own) needs a token the front door checks; every write, an admin's."""
        front = FrontDoor(door.client.app, door.service, API_ROUTES)
        for method, path in _operations(door):
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            access = front.access_of(scope)
            if path in {"/api/v1/enroll", "/api/v1/report"}:
                assert access is Access.NONE, path
            elif path == "/api/v1/token/rotate":
                assert access is Access.HOST
            elif (method, path.replace("{finding_id}", "1")) in RESPONDER_WRITES:
                assert access is Access.RESPONDER, (method, path)
            elif method != "GET" or path in {"/api/v1/tokens", "/api/v1/sessions", "/api/v1/audit"}:
                assert access is Access.ADMIN, (method, path)
            else:
                assert access is Access.READER, (method, path)

    def test_every_admin_write_is_rate_limited(self) -> None:
        """Each POST or DELETE route that needs an admin counts against admin_write_rate."""

        def calls(dependant: Any) -> set[Any]:
            return {dependant.call} | {c for d in dependant.dependencies for c in calls(d)}

        writes = [
            route
            for route in API_ROUTES
            if isinstance(route, APIRoute)
            and route.methods & {"POST", "DELETE", "PUT", "PATCH"}
            and route.path.startswith("/api/v1/")
            and route.path not in {"/api/v1/enroll", "/api/v1/token/rotate"}
        ]
        assert len(writes) == len(ADMIN_WRITES) + len(RESPONDER_WRITES)
        for route in writes:
            assert {admin_write, responder} & calls(route.dependant), route.path
