"""Hostile reports: refused with a 4xx that says why, or stored inertly; never a 5xx, never a
crash, and nothing half-stored."""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.admin.render import clean, to_json
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.helpers import full, make_report

ADMIN = "admin-token-for-hostile-tests"
SECRET = "hostile-enroll-secret"


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, str, str]]:
    settings = CollectorSettings(
        database_url=database_url,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        max_body_bytes=4 * 1024 * 1024,
    )
    with TestClient(create_app(settings)) as client:
        tokens = [
            client.post("/api/v1/enroll", json={"host_id": h, "enroll_secret": SECRET}).json()[
                "token"
            ]
            for h in ("victim-01", "mallory-01")
        ]
        yield client, tokens[0], tokens[1]


def post(client: TestClient, token: str, body: bytes, **headers: str) -> Any:
    return client.post(
        "/api/v1/report",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )


def stored_reports(client: TestClient, host: str) -> int:
    listing = client.get(
        f"/api/v1/hosts/{host}/reports", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return len(listing.json())


def listeners(count: int) -> bytes:
    """A gzip body claiming ``count`` listeners, compressed as it is made (no huge buffer)."""
    head = json.dumps(make_report("mallory-01", 1))[:-2]  # reopen the sections object
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [
        gz.compress(
            head.encode() + b', "ports": {"hash": "' + b"0" * 64 + b'", "data": {"listeners": ['
        )
    ]
    one = b'{"protocol": "tcp", "address": "0.0.0.0", "port": 1},'
    block = one * 10_000
    chunks.extend(gz.compress(block) for _ in range(count // 10_000))
    chunks.append(gz.compress(b'{"protocol": "tcp", "address": "0.0.0.0", "port": 2}]}}}}'))
    chunks.append(gz.flush())
    return b"".join(chunks)


HOSTILE: dict[str, tuple[bytes, int]] = {}


def _case(name: str, status: int) -> Any:
    def register(build: Any) -> Any:
        HOSTILE[name] = (build(), status)
        return build

    return register


@_case("deeply nested", 400)
def _nested() -> bytes:
    return b'{"schema_version": 1, "sections": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@_case("wrong types", 422)
def _wrong_types() -> bytes:
    body = make_report("mallory-01", 1)
    body["sequence"] = "one"
    body["sections"]["ports"]["data"]["listeners"] = {"not": "a list"}
    return json.dumps(body).encode()


@_case("lone surrogate", 400)
def _surrogate() -> bytes:
    body = json.dumps(make_report("mallory-01", 1))
    return body.replace('"agent_version": "0.1.0"', '"agent_version": "\\ud800"').encode()


@_case("overlong strings", 422)
def _overlong() -> bytes:
    body = make_report("mallory-01", 1)
    body["sections"]["system"]["data"]["hostname"] = "x" * 100_000
    return json.dumps(body).encode()


@_case("not json at all", 400)
def _garbage() -> bytes:
    return bytes(range(256)) * 10


@_case("a number", 422)
def _scalar() -> bytes:
    return b"42"


@_case("negative sequence", 422)
def _negative() -> bytes:
    body = make_report("mallory-01", 1)
    body["sequence"] = -5
    return json.dumps(body).encode()


@_case("forged hash for the victim", 403)
def _forged() -> bytes:
    return json.dumps(make_report("victim-01", 99)).encode()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_report_is_refused_and_nothing_stored(
    api: tuple[TestClient, str, str],
    case: str,
) -> None:
    client, _, mallory = api
    body, status = HOSTILE[case]
    response = post(client, mallory, body)
    assert response.status_code == status, response.text[:500]
    assert "detail" in response.json()
    assert stored_reports(client, "mallory-01") == 0
    assert stored_reports(client, "victim-01") == 0


def test_a_million_ports_are_refused_before_they_are_parsed(
    api: tuple[TestClient, str, str],
) -> None:
    """A million listeners compress to almost nothing; inflating them is where it stops."""
    client, _, mallory = api
    response = post(client, mallory, listeners(1_000_000), **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert stored_reports(client, "mallory-01") == 0


def test_more_listeners_than_the_schema_allows(api: tuple[TestClient, str, str]) -> None:
    client, _, mallory = api
    response = post(client, mallory, listeners(30_000), **{"Content-Encoding": "gzip"})
    assert response.status_code == 422
    assert "at most 20000" in json.dumps(response.json())


def test_control_characters_and_nul_are_stored_and_shown_inertly(
    api: tuple[TestClient, str, str],
) -> None:
    """Terminal escapes, NUL and bidi overrides in what a host reports: stored as reported,
    shown with escapes, JSON still valid."""
    client, _, mallory = api
    nasty = "evil\x1b[2J\x00\u202egnp.exe\r\n"
    body = make_report("mallory-01", 1)
    ports = copy.deepcopy(body["sections"]["ports"]["data"])
    ports["listeners"] = [
        {
            "protocol": "tcp",
            "address": "0.0.0.0",
            "port": 4444,
            "pid": 9,
            "process": nasty,
            "user": nasty,
        }
    ]
    body["sections"]["ports"] = full("ports", ports)
    body["sections"]["updates"] = {"error": nasty}
    body["agent_version"] = "1\x1b]0;pwned\x07"
    assert post(client, mallory, json.dumps(body).encode()).status_code == 200
    host = client.get("/api/v1/hosts/mallory-01", headers={"Authorization": f"Bearer {ADMIN}"})
    data = host.json()
    listener = data["sections"]["ports"]["data"]["listeners"][0]
    assert listener["process"] == nasty  # stored as reported
    shown = clean(listener["process"])
    assert "\x1b" not in shown
    assert "\x00" not in shown
    assert "\u202e" not in shown
    assert json.loads(to_json(data)) == data
    errors = [f for f in data["findings"] if f["rule"] == "collection_errors"]
    assert "\x00" not in errors[0]["detail"]  # databases cannot all keep NUL in text


def test_gzip_that_is_not_gzip(api: tuple[TestClient, str, str]) -> None:
    client, _, mallory = api
    response = post(client, mallory, b"\x1f\x8b\x08garbage", **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "not valid gzip" in response.json()["detail"]


def test_truncated_gzip(api: tuple[TestClient, str, str]) -> None:
    client, _, mallory = api
    body = gzip.compress(json.dumps(make_report("mallory-01", 1)).encode())[:-20]
    response = post(client, mallory, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
