"""Rate limits the whole fleet shares, for what callers do rarely: enrolling (per address),
rotating a host token (per host), admin writes (per API token).

Each limit is a row of ``rate_buckets`` per key, taken under a row lock (on SQLite, the write
lock serialises), so every collector process and worker counts against the same bucket.
What this process last learned of a bucket stays in memory in front of it, and refuses
without asking the database a caller that is plainly over its limit (see
`fleetwatch.collector.rate_limits`). A host's report rate, checked for every report, is kept
on the host's row by the ingest writer instead, at no extra statement.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from fleetwatch.collector.rate_limits import RateLimiter, full_bucket

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.collector.rate_limits import Bucket
    from fleetwatch.collector.storage.store import Store


class FleetLimit:
    """``rate`` requests a second per key on average, ``burst`` at once, across the fleet."""

    def __init__(
        self,
        store: Store,
        name: str,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.name = name
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.local = RateLimiter(rate, burst, clock=clock)

    def check(self, key: str) -> int | None:
        """Take one token for ``key``; None if allowed, else the seconds to wait."""
        retry = self.local.check(key)
        if retry is not None:
            return retry  # the fleet's bucket is no fuller than what this process knows
        try:
            retry, bucket = self._take(key)
        except IntegrityError:  # another process made the key's row meanwhile: take from it
            retry, bucket = self._take(key)
        # the database heard of every request let in here: its bucket is the whole story
        self.local.adopt(key, bucket, keep_emptier=False)
        return retry

    def _take(self, key: str) -> tuple[int | None, Bucket]:
        stored_key = f"{self.name}:{key}"
        with self.store.write() as conn:
            stored = self.store.rate_buckets.get(conn, stored_key, lock=True)
            now = self.clock()
            bucket = (stored or full_bucket(self.burst, now)).refilled(now, self.rate, self.burst)
            retry = bucket.wait(self.rate)
            if retry is None:
                bucket = bucket.taken(burst=self.burst)
                self.store.rate_buckets.put(conn, stored_key, bucket, new=stored is None)
        return retry, bucket
