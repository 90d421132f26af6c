"""Section contents, stored once per distinct content under its hash, compressed with zstd.

A content stays while some host holds it as its latest; once every host moved on it is
marked released, and pruning deletes it with the last reports that could refer to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zstandard
from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from fleetwatch.collector.storage.tables import blobs
from fleetwatch.collector.storage.transactions import among_given

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime

    from sqlalchemy import Connection, Select

    from fleetwatch.collector.storage.transactions import Database

COMPRESSION_LEVEL = 3
DELETE_CHUNK = 500  # hashes per DELETE, well under every database's limit on parameters


@functools.lru_cache(maxsize=2)
def _held(dialect: str) -> Select[Any]:
    """Which of ``:hashes`` are held: built once per database kind (with every batch)."""
    return select(blobs.c.hash).where(among_given(dialect, blobs.c.hash, "hashes"))


# PostgreSQL: contents released, with when, in one statement from two arrays
_RELEASE_FROM_ARRAYS = text(
    "UPDATE blobs SET released_at = given.at FROM unnest(:a_hash, :a_at) AS given(hash, at) "
    "WHERE blobs.hash = given.hash"
).bindparams(
    bindparam("a_hash", type_=ARRAY(blobs.c.hash.type)),
    bindparam("a_at", type_=ARRAY(blobs.c.released_at.type)),
)


@dataclass(frozen=True)
class NewBlob:
    """A section's content as canonical JSON, and the collector's own hash of it."""

    hash: str
    section: str
    payload: bytes


class Blobs:
    """The ``blobs`` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def existing(self, conn: Connection, hashes: Iterable[str]) -> set[str]:
        """Which of these hashes are held."""
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        return set(conn.execute(_held(conn.dialect.name), {"hashes": wanted}).scalars())

    def add(self, conn: Connection, new: Sequence[NewBlob], now: datetime) -> None:
        """Store contents, compressed, in one statement; hashes already held are skipped."""
        if new:
            compress = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress
            conn.execute(
                self._database.insert_ignore(blobs),
                [
                    {
                        "hash": blob.hash,
                        "section": blob.section,
                        "data": compress(blob.payload),
                        "size": len(blob.payload),
                        "created_at": now,
                    }
                    for blob in new
                ],
            )

    def get(self, conn: Connection, content_hash: str) -> bytes | None:
        """The content of this hash as JSON, or None if it is not held."""
        data = conn.execute(
            select(blobs.c.data).where(blobs.c.hash == content_hash)
        ).scalar_one_or_none()
        return None if data is None else zstandard.ZstdDecompressor().decompress(data)

    def release(self, conn: Connection, released: Mapping[str, datetime]) -> None:
        """Hosts moved on from these contents (at these times): prunable after retention."""
        if released and conn.dialect.name == "postgresql":
            conn.execute(
                _RELEASE_FROM_ARRAYS,
                {"a_hash": sorted(released), "a_at": [released[h] for h in sorted(released)]},
            )
        elif released:
            conn.execute(
                update(blobs)
                .where(blobs.c.hash == bindparam("b_hash"))
                .values(released_at=bindparam("b_at")),
                [{"b_hash": h, "b_at": at} for h, at in sorted(released.items())],
            )

    def prune(self, conn: Connection, released_before: datetime, keep: set[str]) -> int:
        """Delete contents released before then, but those in ``keep``; return how many."""
        gone = [
            h
            for (h,) in conn.execute(
                select(blobs.c.hash).where(blobs.c.released_at < released_before)
            )
            if h not in keep
        ]
        for start in range(0, len(gone), DELETE_CHUNK):
            conn.execute(delete(blobs).where(blobs.c.hash.in_(gone[start : start + DELETE_CHUNK])))
        return len(gone)
