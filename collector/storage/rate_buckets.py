"""Rate buckets every collector process shares: one row per limited key (`auth.limits`).

A host's report bucket is not here but on its row in ``hosts``, where the ingest writer
keeps it (see `fleetwatch.collector.rate_limits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update

from fleetwatch.collector.rate_limits import Bucket
from fleetwatch.collector.storage.tables import rate_buckets

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fleetwatch.collector.storage.transactions import Database


class RateBuckets:
    """The ``rate_buckets`` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def get(self, conn: Connection, key: str, *, lock: bool = False) -> Bucket | None:
        """The bucket of ``key``, or None; with ``lock`` its row stays locked until commit."""
        query = select(rate_buckets.c.tokens, rate_buckets.c.at).where(rate_buckets.c.key == key)
        if lock:
            query = self._database.locking(query)
        row = conn.execute(query).first()
        return None if row is None else Bucket(row.tokens, row.at)

    def put(self, conn: Connection, key: str, bucket: Bucket, *, new: bool) -> None:
        """Store the bucket of ``key``: a new row, or the one `get` found."""
        if new:
            conn.execute(insert(rate_buckets).values(key=key, tokens=bucket.tokens, at=bucket.at))
        else:
            conn.execute(
                update(rate_buckets)
                .where(rate_buckets.c.key == key)
                .values(tokens=bucket.tokens, at=bucket.at)
            )

    def prune(self, conn: Connection, untouched_since: float) -> int:
        """Delete buckets nobody used since then (seconds since the epoch): full again by
        now, as good as absent. Returns how many."""
        done = conn.execute(delete(rate_buckets).where(rate_buckets.c.at < untouched_since))
        return int(done.rowcount)
