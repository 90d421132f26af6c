"""Report delivery without the web framework's per-request layers.

Every agent in the fleet posts a report every few minutes, and after an outage they all post
their spooled reports at once. The report endpoint is therefore plain ASGI in front of the
FastAPI application: same checks, same answers, a fraction of the work per request. Everything
else goes to FastAPI. (The endpoint is described in the OpenAPI document by `web.openapi`.)
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector.ingest.queue import OverloadedError
from fleetwatch.collector.ingest.writer import ReportRejectedError
from fleetwatch.collector.service import ReportInvalidError, parse_report
from fleetwatch.collector.web.bodies import LimitError, read_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pydantic import BaseModel
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fleetwatch.collector.service import CollectorService

REPORT_PATH = "/api/v1/report"
# Small (hash-only) reports parse in microseconds; large ones would hold up the event loop.
INLINE_PARSE_BYTES = 256 * 1024
DB_RETRY_AFTER = 5


class _RefusalError(Exception):
    def __init__(self, status: int, detail: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class ReportFastPath:
    """ASGI middleware: POST /api/v1/report is answered here, anything else by ``app``."""

    def __init__(self, app: ASGIApp, service: CollectorService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != REPORT_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"detail": "Method Not Allowed"}, {"Allow": "POST"})
            return
        try:
            answer: BaseModel = await self._report(scope, receive)
        except _RefusalError as refusal:
            await _answer(send, refusal.status, {"detail": refusal.detail}, refusal.headers)
            return
        await _answer_raw(send, 200, answer.model_dump_json().encode(), {})

    async def _report(self, scope: Scope, receive: Receive) -> BaseModel:
        svc = self.service
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host_id = await self._host(headers.get("authorization", ""))
        retry = svc.host_limiter.check(host_id)
        if retry is not None:
            raise _RefusalError(
                429, f"host {host_id} is reporting too often", {"Retry-After": str(int(retry))}
            )
        try:
            body = await read_chunks(
                headers, _chunks(receive), svc.settings.max_body_bytes, svc.settings.body_timeout
            )
            report = (
                parse_report(body)
                if len(body) <= INLINE_PARSE_BYTES
                else await run_in_threadpool(parse_report, body)
            )
            future = svc.pipeline.submit(report, host_id)
            return await asyncio.wrap_future(future)
        except LimitError as exc:
            extra = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else {}
            raise _RefusalError(exc.status, exc.message, extra) from exc
        except ReportInvalidError as exc:
            raise _RefusalError(exc.status, exc.detail) from exc
        except ReportRejectedError as exc:
            raise _RefusalError(exc.status, exc.message) from exc
        except OverloadedError as exc:
            raise _RefusalError(
                503,
                "the collector is busy; try again shortly",
                {"Retry-After": str(DB_RETRY_AFTER)},
            ) from exc
        except (DBAPIError, PoolTimeoutError) as exc:
            raise _RefusalError(
                503, "database unavailable; try again shortly", {"Retry-After": str(DB_RETRY_AFTER)}
            ) from exc

    async def _host(self, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _RefusalError(
                401,
                "missing bearer token (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        identity = self.service.identity
        host_id = identity.cached_host(token)
        if host_id is None:
            try:
                host_id = await run_in_threadpool(identity.host_for, token)
            except (DBAPIError, PoolTimeoutError) as exc:
                raise _RefusalError(
                    503,
                    "database unavailable; try again shortly",
                    {"Retry-After": str(DB_RETRY_AFTER)},
                ) from exc
        if host_id is None:
            raise _RefusalError(
                401, "host token not accepted (unknown or revoked)", {"WWW-Authenticate": "Bearer"}
            )
        return host_id


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise LimitError(400, "client went away before sending the whole body")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _answer(send: Send, status: int, content: Any, headers: dict[str, str]) -> None:
    await _answer_raw(send, status, json.dumps(content).encode(), headers)


async def _answer_raw(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
