"""Token buckets, and two processes following one shared bucket."""

from __future__ import annotations

from fleetwatch.collector.rate_limits import Bucket, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class TestBucket:
    def test_it_refills_at_the_rate_up_to_the_burst(self) -> None:
        """rate tokens a second are added, never more than burst."""
        assert Bucket(0, 100).refilled(102, rate=0.5, burst=5) == Bucket(1, 102)
        assert Bucket(4, 100).refilled(200, rate=0.5, burst=5) == Bucket(5, 200)

    def test_a_clock_behind_the_stamp_refills_nothing(self) -> None:
        """A collector whose clock lags the one that stamped the bucket adds no tokens."""
        assert Bucket(2, 100).refilled(90, rate=1, burst=5) == Bucket(2, 100)

    def test_debt_is_bounded_by_the_burst(self) -> None:
        """Requests let in beyond the bucket leave a debt, down to -burst at most."""
        assert Bucket(1, 0).taken(3, burst=5) == Bucket(-2, 0)
        assert Bucket(1, 0).taken(30, burst=5) == Bucket(-5, 0)

    def test_the_wait_is_whole_seconds_until_one_token(self) -> None:
        """None with a token; else the seconds until there is one, at least 1."""
        assert Bucket(1, 0).wait(0.5) is None
        assert Bucket(0, 0).wait(0.5) == 2
        assert Bucket(-2, 0).wait(1) == 3
        assert Bucket(0.99, 0).wait(100) == 1


class TestRateLimiter:
    def test_it_refuses_beyond_the_burst_with_a_wait(self) -> None:
        """burst requests at once, then the seconds to wait."""
        clock = Clock()
        limiter = RateLimiter(0.1, 3, clock=clock)
        assert [limiter.check("h") for _ in range(4)] == [None, None, None, 10]
        clock.now += 10
        assert limiter.check("h") is None

    def test_two_processes_sharing_a_bucket_hold_the_fleet_rate(self) -> None:
        """A host alternating between two processes, each taking from the shared bucket as
        the writer does after letting a report in: the pair lets in burst plus one in flight,
        not twice the burst."""
        clock = Clock()
        one, other = RateLimiter(0.01, 5, clock=clock), RateLimiter(0.01, 5, clock=clock)
        stored: Bucket | None = None
        let_in = 0
        for attempt in range(20):
            process = one if attempt % 2 == 0 else other
            if process.check("h") is None:
                let_in += 1
                stored = process.take("h", stored)
        assert let_in == 6
        assert stored is not None
        assert stored.tokens == -1  # the one let in beyond the bucket is paid back

    def test_an_emptier_shared_bucket_is_adopted(self) -> None:
        """After adopting the shared bucket, a process refuses from memory alone."""
        clock = Clock()
        limiter = RateLimiter(1, 5, clock=clock)
        limiter.adopt("h", Bucket(0, clock.now))
        assert limiter.check("h") == 1

    def test_requests_the_database_never_heard_of_are_not_forgiven(self) -> None:
        """Requests let in here but refused later (never written) stay counted when a
        fuller shared bucket is adopted."""
        clock = Clock()
        limiter = RateLimiter(0.01, 3, clock=clock)
        assert [limiter.check("h") for _ in range(3)] == [None, None, None]
        limiter.adopt("h", Bucket(2, clock.now))  # the database saw one of the three
        assert limiter.check("h") == 100
