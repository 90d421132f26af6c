"""Reading a request body within limits: its size (also once decompressed), its speed, and
its compression. (How often a client may ask is in `collector.rate_limits`.)"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from fleetwatch.collector.refusals import (
    BodyIncomplete,
    BodyNotGzip,
    BodyTooLarge,
    BodyTooSlow,
    UnsupportedEncoding,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from starlette.requests import Request
    from starlette.types import Receive


async def read_body(request: Request, max_bytes: int, time_limit: float) -> bytes:
    """The request body, decompressed, refusing more than ``max_bytes`` or a slow sender."""
    # the request's own receive, not request.stream(): a client that goes away is then a
    # refusal (BodyIncomplete), not Starlette's ClientDisconnect and a traceback in the log
    return await read_chunks(request.headers, chunks_of(request.receive), max_bytes, time_limit)


async def read_chunks(
    headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int, time_limit: float
) -> bytes:
    """A body from its chunks, decompressed, with the limits of `read_body`."""
    check_declared_size(headers, max_bytes)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"identity", "gzip"}:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    body = await read_raw(headers, chunks, max_bytes, time_limit)
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    return body


def check_declared_size(headers: Mapping[str, str], max_bytes: int) -> None:
    """Refuse a body whose declared Content-Length is over ``max_bytes``, before reading it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        msg = f"request body of {declared} bytes is over the limit of {max_bytes} bytes"
        raise BodyTooLarge(msg)


async def read_raw(
    headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int, time_limit: float
) -> bytes:
    """A body as sent (compressed or not): at most ``max_bytes``, as declared and as received,
    all of it within ``time_limit`` seconds. Memory held is bounded by ``max_bytes``: the
    read stops at the first chunk past the limit."""
    check_declared_size(headers, max_bytes)
    received: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(time_limit):
            async for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    msg = f"request body is over the limit of {max_bytes} bytes"
                    raise BodyTooLarge(msg)
                received.append(chunk)
    except TimeoutError:
        msg = f"request body not received within {time_limit:g} s"
        raise BodyTooSlow(msg) from None
    return b"".join(received)


async def chunks_of(receive: Receive) -> AsyncIterator[bytes]:
    """The body chunks of an ASGI request, as its server hands them over."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyIncomplete
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BodyNotGzip(f"body is not valid gzip: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        msg = f"decompressed request body is over the limit of {max_bytes} bytes"
        raise BodyTooLarge(msg)
    if not inflater.eof:
        raise BodyNotGzip("body is not valid gzip: truncated")
    return out
