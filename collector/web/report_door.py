"""Report delivery without the web framework's per-request layers.

Every agent in the fleet posts a report every few minutes, and after an outage they all post
their spooled reports at once. The report endpoint is therefore plain ASGI in front of the
FastAPI application: the same checks and answers (one token parser in `web.bearer`, one
translation of refusals in `web.answers`), a fraction of the work per request. Everything else
goes to FastAPI. (The endpoint is described in the OpenAPI document by `web.openapi`.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fleetwatch.collector import instruments
from fleetwatch.collector.ingest.parse import parse_report
from fleetwatch.collector.refusals import HostRateLimited
from fleetwatch.collector.web.answers import ANSWERED, answer, as_refusal
from fleetwatch.collector.web.bearer import host_of
from fleetwatch.collector.web.bodies import chunks_of, read_chunks

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fleetwatch.collector.service import CollectorService
    from fleetwatch.schema import ReportAck

REPORT_PATH = "/api/v1/report"
# Small (hash-only) reports parse in microseconds; large ones would hold up the event loop.
INLINE_PARSE_BYTES = 256 * 1024


class ReportDoor:
    """ASGI middleware: POST /api/v1/report is answered here, anything else by ``app``."""

    def __init__(self, app: ASGIApp, service: CollectorService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != REPORT_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            refused = JSONResponse({"detail": "Method Not Allowed"}, 405, {"Allow": "POST"})
            await refused(scope, receive, send)
            return
        try:
            ack = await self._report(scope, receive)
        except ANSWERED as exc:
            instruments.REPORTS_RECEIVED.labels("refused").inc()
            await answer(as_refusal(exc))(scope, receive, send)
            return
        instruments.REPORTS_RECEIVED.labels(ack.status).inc()
        await _send_ack(send, ack)

    async def _report(self, scope: Scope, receive: Receive) -> ReportAck:
        svc = self.service
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host_id = await host_of(svc.identity, headers.get("authorization"))
        retry = svc.host_limiter.check(host_id)
        if retry is not None:
            msg = f"host {host_id} is reporting too often"
            raise HostRateLimited(msg, retry_after=retry, token_host=host_id)
        body = await read_chunks(
            headers, chunks_of(receive), svc.settings.max_body_bytes, svc.settings.body_timeout
        )
        report = (
            parse_report(body)
            if len(body) <= INLINE_PARSE_BYTES
            else await run_in_threadpool(parse_report, body)
        )
        return await asyncio.wrap_future(svc.ingest_queue.submit(report, host_id))


async def _send_ack(send: Send, ack: ReportAck) -> None:
    body = ack.model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
