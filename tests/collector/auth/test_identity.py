"""Identity across processes and over time: how soon a host token revoked in one process is
refused by the others, and how often a host or an admin may change tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from fleetwatch.collector.auth.identity import Identity, Principal
from fleetwatch.collector.refusals import (
    AdminWriteRateLimited,
    HostNotEnrolled,
    RotationRateLimited,
)
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report
from tests.helpers import make_report

SECRET = "enroll-secret-for-identity-tests"

Processes = Callable[..., tuple[Identity, Identity]]
Services = Callable[..., tuple[CollectorService, CollectorService]]


@pytest.fixture
def services(database_url: str, tmp_path: Path) -> Iterator[Services]:
    """Two collector processes' worth of services on one database, with the settings asked."""
    started: list[CollectorService] = []

    def make(**settings: Any) -> tuple[CollectorService, CollectorService]:
        config = CollectorSettings(
            database_url=database_url, enroll_secret=SECRET, data_dir=tmp_path, **settings
        )
        pair = CollectorService(config), CollectorService(config)
        for service in pair:
            service.start()
            started.append(service)
        return pair

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def processes(services: Services) -> Processes:
    """The identities of two such processes."""

    def make(**settings: Any) -> tuple[Identity, Identity]:
        one, other = services(**settings)
        return one.identity, other.identity

    return make


def host_of(identity: Identity, token: str) -> str | None:
    """As a door asks: revocations followed when a look is due, this process's cache, then
    the database."""
    identity.follow_revocations()
    return identity.cached_host(token) or identity.host_for(token)


class Clock:
    """A clock for the token cache that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clocks(pair: tuple[Identity, Identity]) -> tuple[Identity, Identity, Clock]:
    clock = Clock()
    for identity in pair:
        identity.clock = clock
    return pair[0], pair[1], clock


class Statements:
    """The SQL statements run on an engine while counted."""

    def __init__(self, service: CollectorService) -> None:
        self.seen: list[str] = []
        event.listen(service.store.database.engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(statement)


class TestTokenCache:
    def test_a_full_cache_keeps_the_live_tokens_and_drops_the_expired(
        self, processes: Processes, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A fleet as large as the cache does not empty it on every look-up: hosts already
        cached are renewed in place, and a new one makes room by dropping expired tokens."""
        monkeypatch.setattr("fleetwatch.collector.auth.identity.TOKEN_CACHE_SIZE", 3)
        one, _ = processes(token_cache_seconds=10, token_revocation_check_seconds=0)
        now = [1000.0]
        one.clock = lambda: now[0]
        tokens = {h: one.enroll(h, SECRET) for h in ("a", "b", "c", "d")}
        for host_id in ("a", "b", "c"):
            assert one.host_for(tokens[host_id]) == host_id
        now[0] += 5
        assert one.host_for(tokens["a"]) == "a"  # renewed in place: nothing dropped
        assert {one.cached_host(tokens[h]) for h in ("a", "b", "c")} == {"a", "b", "c"}
        now[0] += 6  # b and c expired, a still live
        assert one.host_for(tokens["d"]) == "d"
        assert one.cached_host(tokens["a"]) == "a"
        assert one.cached_host(tokens["d"]) == "d"
        assert len(one._host_tokens) == 2

    def test_a_token_not_revoked_is_served_without_asking_for_it_again(
        self, services: Services
    ) -> None:
        """Once checked, a live token costs no query until it expires: only the look for
        revocations, at most once per token_revocation_check_seconds."""
        first, second = services(token_cache_seconds=900, token_revocation_check_seconds=1)
        one, other, clock = with_clocks((first.identity, second.identity))
        token = one.enroll("web-01", SECRET)
        assert host_of(other, token) == "web-01"
        counted = Statements(second)
        for _ in range(5):
            assert host_of(other, token) == "web-01"
        assert counted.seen == []
        clock.now += 1
        for _ in range(5):
            assert host_of(other, token) == "web-01"
        queries = [q for q in counted.seen if q.split()[0].upper() in {"SELECT", "UPDATE"}]
        assert len(queries) == 1
        assert "revoked_at >=" in queries[0]
        assert "token_hash =" not in queries[0]


class TestRevocationAcrossProcesses:
    def test_without_a_cache_a_revoked_token_is_refused_at_once_everywhere(
        self, processes: Processes
    ) -> None:
        """token_cache_seconds = 0: the other process refuses the token the moment one
        process revoked it."""
        one, other = processes(token_cache_seconds=0)
        token = one.enroll("web-01", SECRET)
        assert host_of(other, token) == "web-01"
        one.revoke_host("web-01")
        assert host_of(one, token) is None
        assert host_of(other, token) is None

    def test_without_following_revocations_the_window_is_token_cache_seconds(
        self, processes: Processes
    ) -> None:
        """token_revocation_check_seconds = 0: another process that checked the token within
        the last token_cache_seconds still accepts it, and refuses it once they have passed."""
        one, other, clock = with_clocks(
            processes(token_cache_seconds=10, token_revocation_check_seconds=0)
        )
        token = one.enroll("web-01", SECRET)
        assert host_of(other, token) == "web-01"
        one.revoke_host("web-01")
        assert host_of(one, token) is None  # the process that revoked it: at once
        clock.now += 9.9
        assert host_of(other, token) == "web-01"  # the other: from its cache
        clock.now += 0.2
        assert host_of(other, token) is None

    def test_a_revoked_token_is_refused_after_the_next_revocation_check(
        self, processes: Processes
    ) -> None:
        """The documented window: token_revocation_check_seconds, however long the cache
        keeps tokens."""
        one, other, clock = with_clocks(
            processes(token_cache_seconds=900, token_revocation_check_seconds=1)
        )
        token = one.enroll("web-01", SECRET)
        assert host_of(other, token) == "web-01"
        one.revoke_host("web-01")
        assert host_of(one, token) is None  # the process that revoked it: at once
        clock.now += 0.5
        assert host_of(other, token) == "web-01"  # the other: from its cache, until it looks
        clock.now += 0.5
        assert host_of(other, token) is None
        assert other.cached_host(token) is None  # dropped, not merely refused once

    def test_a_token_rotated_away_is_refused_after_the_next_revocation_check(
        self, processes: Processes
    ) -> None:
        """The old token, revoked where the new one is first used, is refused elsewhere too."""
        one, other, clock = with_clocks(
            processes(token_cache_seconds=900, token_revocation_check_seconds=1)
        )
        old = one.enroll("web-01", SECRET)
        assert host_of(other, old) == "web-01"
        new = one.rotate("web-01", old)
        assert host_of(other, old) == "web-01"  # the agent may not have stored the new one
        assert host_of(one, new) == "web-01"  # first use: the old one is revoked
        assert host_of(one, old) is None
        clock.now += 1
        assert host_of(other, old) is None
        assert host_of(other, new) == "web-01"

    def test_a_token_replaced_by_enrolling_again_is_refused_after_the_next_check(
        self, processes: Processes
    ) -> None:
        """Enrolling again (in the window an admin opened) revokes the host's tokens for
        every process."""
        one, other, clock = with_clocks(
            processes(token_cache_seconds=900, token_revocation_check_seconds=1)
        )
        old = one.enroll("web-01", SECRET)
        assert host_of(other, old) == "web-01"
        assert one.allow_reenroll("web-01", minutes=5)
        new = one.enroll("web-01", SECRET)
        clock.now += 1
        assert host_of(other, old) is None
        assert host_of(other, new) == "web-01"

    def test_a_cached_token_of_a_deleted_host_cannot_report(self, services: Services) -> None:
        """Tokens deleted with their host leave no revocation to follow: the other process may
        still name the host from its cache, but the ingest writer refuses the report."""
        first, second = services(token_cache_seconds=900, token_revocation_check_seconds=1)
        token = first.identity.enroll("web-01", SECRET)
        assert host_of(second.identity, token) == "web-01"
        with first.store.write() as conn:
            first.store.hosts.delete(conn, "web-01")
        assert host_of(first.identity, token) is None
        assert second.identity.cached_host(token) == "web-01"
        report = Report.model_validate(make_report("web-01", 1, {}))
        with pytest.raises(HostNotEnrolled):
            second.ingestor.ingest(report, "web-01")


class TestRotationLimits:
    def test_rotations_beyond_the_burst_are_refused_with_a_wait(self, processes: Processes) -> None:
        """rotate_burst rotations at once, then RotationRateLimited saying how long to wait;
        no token is made for a refused one."""
        one, _ = processes(rotate_rate=0.01, rotate_burst=3)
        token = one.enroll("web-01", SECRET)
        for _ in range(3):
            one.rotate("web-01", token)
        with pytest.raises(RotationRateLimited) as refused:
            one.rotate("web-01", token)
        assert refused.value.retry_after == 100

    def test_a_host_holds_at_most_two_live_tokens(self, processes: Processes) -> None:
        """However often it rotates: the token it asks with and the newest one."""
        one, _ = processes(rotate_burst=1000)
        token = one.enroll("web-01", SECRET)
        issued = [one.rotate("web-01", token) for _ in range(50)]
        assert [host_of(one, t) for t in (token, issued[-1])] == ["web-01", "web-01"]
        assert [host_of(one, t) for t in issued[:-1]] == [None] * 49


class TestAdminWriteLimits:
    def test_each_api_token_has_its_own_budget(self, processes: Processes) -> None:
        """admin_write_burst writes per token; another token (or the bootstrap one) is not
        slowed by it."""
        one, _ = processes(admin_write_rate=0.5, admin_write_burst=2)
        alice = Principal(name="alice", kind="admin", token_id=1)
        namesake = Principal(name="alice", kind="admin", token_id=2)
        bootstrap = Principal(name="bootstrap admin", kind="admin")
        one.count_admin_write(alice)
        one.count_admin_write(alice)
        with pytest.raises(AdminWriteRateLimited) as refused:
            one.count_admin_write(alice)
        assert refused.value.retry_after == 2
        one.count_admin_write(namesake)
        one.count_admin_write(bootstrap)
