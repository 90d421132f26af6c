"""Reading a request body within limits: its size (also once decompressed), its speed, and
its compression. (How often a client may ask is in `web.rate_limits`.)"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from fleetwatch.collector.refusals import (
    BodyNotGzip,
    BodyTooLarge,
    BodyTooSlow,
    UnsupportedEncoding,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from starlette.requests import Request


async def read_body(request: Request, max_bytes: int, time_limit: float) -> bytes:
    """The request body, decompressed, refusing more than ``max_bytes`` or a slow sender."""
    return await read_chunks(request.headers, request.stream(), max_bytes, time_limit)


async def read_chunks(
    headers: Mapping[str, str], chunks: AsyncIterator[bytes], max_bytes: int, time_limit: float
) -> bytes:
    """A body from its chunks, with the limits of `read_body`."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        msg = f"request body of {declared} bytes is over the limit of {max_bytes} bytes"
        raise BodyTooLarge(msg)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"identity", "gzip"}:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
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
    body = b"".join(received)
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    return body


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
