"""The security log of the real collector process: one JSON line per refusal with who, what
and why, and never a secret, whatever was refused."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import CollectorProcess, make_report

GUESS = "guessed-secret-never-to-be-logged"
FORGED_TOKEN = "fwh_forged-token-never-to-be-logged"
BODY_TIMEOUT = 1.0
BODY_LIMIT = 64 * 1024


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'fleetwatch.db'}",
        extra_env={
            "FLEETWATCH_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "FLEETWATCH_MAX_BODY_BYTES": str(BODY_LIMIT),
            # a forged report, an oversized and a slow body, one report; the next is refused
            "FLEETWATCH_HOST_BURST": "4",
            "FLEETWATCH_HOST_RATE": "0.001",
        },
    ).start()
    yield process
    process.stop()


def refusals(collector: CollectorProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in collector.log.read_text().splitlines() if line[:1] == "{"]
    return [
        line
        for line in lines
        if line.get("logger") == "fleetwatch.security" and line["event"] == "request refused"
    ]


def slow_report(collector: CollectorProcess, token: str) -> bytes:
    """Headers, a few bytes of a body, then nothing: what the collector answers."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/report HTTP/1.1\r\nHost: collector\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"schema_version": 1'
        )
        time.sleep(BODY_TIMEOUT * 2)
        return sock.recv(65536)


def test_each_refusal_is_one_json_line_without_secrets(collector: CollectorProcess) -> None:
    """Forged report, unknown token, wrong secret, enrolling again, oversized body, slow body
    and a host over its rate: one line each, in order, with the reason, the status, the
    client, the path and the host claimed; no token or secret anywhere in the log."""
    url = collector.url

    def enroll(host_id: str, secret: str) -> requests.Response:
        return requests.post(
            url + "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": secret}, timeout=10
        )

    def report(token: str, body: Any = None, data: bytes | None = None) -> requests.Response:
        return requests.post(
            url + "/api/v1/report",
            json=body,
            data=data,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    token = enroll("web-01", collector.enroll_secret).json()["token"]
    assert report(token, make_report("db-01", 1, {})).status_code == 403
    assert report(FORGED_TOKEN, make_report("web-01", 1, {})).status_code == 401
    assert enroll("web-02", GUESS).status_code == 403
    assert enroll("web-01", collector.enroll_secret).status_code == 409
    assert report(token, data=b"x" * (BODY_LIMIT + 1)).status_code == 413
    assert slow_report(collector, token).startswith(b"HTTP/1.1 408 ")
    assert report(token, make_report("web-01", 1, {})).status_code == 200
    assert report(token, make_report("web-01", 2, {})).status_code == 429

    lines = refusals(collector)
    assert [(line["reason"], line["status"]) for line in lines] == [
        ("host_mismatch", 403),
        ("unknown_token", 401),
        ("enroll_secret_rejected", 403),
        ("already_enrolled", 409),
        ("body_too_large", 413),
        ("body_too_slow", 408),
        ("host_rate_limited", 429),
    ]
    assert all(line["client"] == "127.0.0.1" for line in lines)
    assert all(line["method"] == "POST" for line in lines)
    assert [line["path"] for line in lines[2:4]] == ["/api/v1/enroll"] * 2
    assert all(line["level"] == "warning" and line["timestamp"] for line in lines)
    hosts = [(line["claimed_host"], line["token_host"]) for line in lines]
    assert hosts == [
        ("db-01", "web-01"),
        (None, None),
        ("web-02", None),
        ("web-01", None),
        (None, None),
        (None, None),
        (None, "web-01"),
    ]
    text = collector.log.read_text()
    for secret in (GUESS, FORGED_TOKEN, token, collector.enroll_secret, collector.admin_token):
        assert secret not in text
