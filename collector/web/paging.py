"""Cursor paging for the API's lists: what a cursor holds, how it is written and checked.

A list endpoint answers one page: the JSON list as before, and, when more rows follow, the
cursor of the next page in two headers, ``X-Next-Cursor: <cursor>`` and
``Link: <url of the next page>; rel="next"``. The caller sends it back as ``?cursor=`` with
the same filters; a page without those headers is the last.

A cursor is opaque to callers: the list it pages, a digest of the filters and order it was
made for, and the position after which the next page starts (the last row's sort value and
unique key: keyset paging, so a page deep into 100,000 rows costs what the first does). It is
base64url JSON with a check digest; anything altered, cut short, or sent to another list or
with other filters is refused with 400 naming what is wrong. It grants nothing: the caller's
scope (a token limited to a unit) and the filters are applied again to every page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Query

from fleetwatch.collector.refusals import InvalidCursor, OffsetPaging

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import Request, Response

VERSION = 1
DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
MAX_CURSOR = 2048  # characters: a cursor is a few keys, never more

Limit = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Rows per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    ),
]
CursorParam = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR,
        description="The X-Next-Cursor of the previous page (same filters), to read the next",
    ),
]

# Lists that paged by offset before they paged by cursor still name the parameter, so that a
# client that sends one is told, not given the first page again and again.
Offset = Annotated[
    int | None,
    Query(
        ge=0,
        deprecated=True,
        description="Gone: only 0 is accepted. Page with the cursor in X-Next-Cursor",
    ),
]


def no_offset(offset: int | None) -> None:
    """Refuse an offset past 0: this list pages by cursor."""
    if offset:
        msg = (
            "offset paging is gone: read the X-Next-Cursor header of a page and send it back "
            "as ?cursor= for the next"
        )
        raise OffsetPaging(msg)


def _digest(listing: str, body: bytes) -> str:
    return hashlib.sha256(listing.encode() + b"\0" + body).hexdigest()[:16]


def _filters_digest(filters: Mapping[str, object]) -> str:
    text = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(listing: str, filters: Mapping[str, object], position: list[Any]) -> str:
    """The cursor of the page after ``position`` in ``listing`` read with ``filters``."""
    body = json.dumps(
        {"v": VERSION, "f": _filters_digest(filters), "p": position}, separators=(",", ":")
    ).encode()
    raw = body + b"." + _digest(listing, body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, listing: str, filters: Mapping[str, object], width: int) -> list[Any]:
    """The position a cursor holds (a list of ``width`` keys); `InvalidCursor` naming the
    problem if it was not made by `encode` for this list and these filters."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = "cursor is not base64url text: pass the X-Next-Cursor of the previous page as is"
        raise InvalidCursor(msg) from exc
    body, _, check = raw.rpartition(b".")
    if not body or check != _digest(listing, body).encode():
        msg = f"cursor was altered, cut short, or made for another list than {listing}"
        raise InvalidCursor(msg)
    try:
        held = json.loads(body)
    except ValueError as exc:  # pragma: no cover  (the digest matched: we wrote it)
        raise InvalidCursor("cursor does not hold JSON") from exc
    if not isinstance(held, dict) or held.get("v") != VERSION:
        msg = "cursor is from another version of the collector: start from the first page"
        raise InvalidCursor(msg)
    if held.get("f") != _filters_digest(filters):
        msg = "cursor was made for other filters or another order: send the same ones"
        raise InvalidCursor(msg)
    position = held.get("p")
    if not isinstance(position, list) or len(position) != width:
        raise InvalidCursor("cursor does not hold a position in this list")
    return position


def next_page(request: Request, response: Response, cursor: str | None) -> None:
    """Say where the next page is, if there is one (`X-Next-Cursor` and `Link`)."""
    if cursor is None:
        return
    url = request.url.include_query_params(cursor=cursor)
    response.headers["X-Next-Cursor"] = cursor
    response.headers["Link"] = f'<{url}>; rel="next"'


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorParam",
    "Limit",
    "Offset",
    "decode",
    "encode",
    "next_page",
    "no_offset",
]
