"""Rate limits: token buckets, and how every process of the fleet shares them.

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a request takes one, and a
request that finds less than one is refused with the seconds to wait. Every collector process
behind a load balancer must see the same buckets, or a limit would be as many times higher
as there are processes. So the buckets live in the database, and each process keeps in
memory what it last learned of them (`RateLimiter`):

- a host's report bucket is kept on its row in ``hosts``: the ingest writer, which locks that
  row for every report anyway, takes the report's token in the same transaction and tells
  this process the bucket it left (`RateLimiter.take`); the host token check, when it asks
  the database, reads the bucket in the same query (`RateLimiter.adopt`); no statement is
  added for either;
- the rarer limits (enrollment per address, token rotation per host, admin writes per API
  token) are rows of ``rate_buckets``, taken under a row lock (`auth.limits`).

A process refuses from memory, without asking the database: what it knows of a bucket is the
emptier of the database's last word and its own count since (which may hold requests refused
after the check, that the database never heard of), and lacks only other processes' requests,
so a refusal from memory is always one the fleet would make. Between two looks at the database a
process may let in what another process spent meanwhile: the overshoot is bounded by the
requests in flight at once (one per collector for an agent that waits for its answer), and a
bucket may go into debt (down to ``-burst``) so that it is paid back by waiting longer.

Buckets shared between machines are stamped with the wall clock (seconds since the epoch):
collectors' clocks should agree (NTP). A clock that lags another's refills nothing until it
catches up, so skew never adds tokens.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket as stored: its tokens at ``at`` (seconds since the epoch)."""

    tokens: float
    at: float

    def refilled(self, now: float, rate: float, burst: int) -> Bucket:
        """The bucket at ``now``, ``rate`` tokens a second later, never above ``burst``."""
        if now <= self.at:  # a clock behind the one that stamped it: no refill yet
            return self
        return Bucket(min(float(burst), self.tokens + (now - self.at) * rate), now)

    def taken(self, count: int = 1, *, burst: int) -> Bucket:
        """The bucket after ``count`` requests were let in, into debt down to ``-burst``."""
        return Bucket(max(-float(burst), self.tokens - count), self.at)

    def wait(self, rate: float) -> int | None:
        """None when a request may be let in now, else the whole seconds until it may."""
        if self.tokens >= 1:
            return None
        return max(1, math.ceil((1 - self.tokens) / rate))


def full_bucket(burst: int, now: float) -> Bucket:
    return Bucket(float(burst), now)


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, ``burst`` at once.

    On its own it limits one process; with `adopt` it follows a bucket other processes share
    (see the module).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> int | None:
        """Take one token for ``key``; None if allowed, else the seconds to wait."""
        now = self.clock() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key, full_bucket(self.burst, now))
            bucket = bucket.refilled(now, self.rate, self.burst)
            retry = bucket.wait(self.rate)
            if retry is None:
                bucket = bucket.taken(burst=self.burst)
            self._keep(key, bucket)
            return retry

    def take(self, key: str, stored: Bucket | None, count: int = 1) -> Bucket:
        """The shared bucket ``stored`` (None: never used) after ``count`` requests were let
        in, to be written back; this process follows it from now on."""
        now = self.clock()
        bucket = (stored or full_bucket(self.burst, now)).refilled(now, self.rate, self.burst)
        bucket = bucket.taken(count, burst=self.burst)
        self.adopt(key, bucket)
        return bucket

    def adopt(self, key: str, bucket: Bucket, *, keep_emptier: bool = True) -> None:
        """Follow ``bucket``, as the database holds it now, for ``key``.

        What this process knows stays when it is emptier: it may hold requests the database
        never heard of (refused after the check: a body too large or too slow, a report for
        another host), which are not forgiven. The database's bucket lacks none of the
        others, so the emptier of the two is never emptier than the fleet's. Without
        ``keep_emptier`` the database's bucket replaces what this process knew (it heard of
        every request this process let in).
        """
        with self._lock:
            known = self._buckets.get(key) if keep_emptier else None
            if known is not None:
                now = max(known.at, bucket.at)
                known = known.refilled(now, self.rate, self.burst)
                if known.tokens < bucket.refilled(now, self.rate, self.burst).tokens:
                    bucket = known
            self._keep(key, bucket)

    def _keep(self, key: str, bucket: Bucket) -> None:
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # a flood of distinct keys: start over, stay bounded
        self._buckets[key] = bucket
