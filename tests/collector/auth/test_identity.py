"""Identity across processes and over time: how long a revoked host token may still be
accepted elsewhere, and how often a host or an admin may change tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.collector.auth.identity import Identity, Principal
from fleetwatch.collector.refusals import AdminWriteRateLimited, RotationRateLimited
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings

SECRET = "enroll-secret-for-identity-tests"

Processes = Callable[..., tuple[Identity, Identity]]


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    """Two collector processes' worth of services on one database, with the settings asked."""
    started: list[CollectorService] = []

    def make(**settings: Any) -> tuple[Identity, Identity]:
        config = CollectorSettings(
            database_url=database_url, enroll_secret=SECRET, data_dir=tmp_path, **settings
        )
        pair = CollectorService(config), CollectorService(config)
        for service in pair:
            service.start()
            started.append(service)
        return pair[0].identity, pair[1].identity

    yield make
    for service in started:
        service.stop()


def host_of(identity: Identity, token: str) -> str | None:
    """As a door asks: this process's cache first, then the database."""
    return identity.cached_host(token) or identity.host_for(token)


class TestTokenCache:
    def test_a_full_cache_keeps_the_live_tokens_and_drops_the_expired(
        self, processes: Processes, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A fleet as large as the cache does not empty it on every look-up: hosts already
        cached are renewed in place, and a new one makes room by dropping expired tokens."""
        monkeypatch.setattr("fleetwatch.collector.auth.identity.TOKEN_CACHE_SIZE", 3)
        one, _ = processes(token_cache_seconds=10)
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

    def test_with_a_cache_the_window_is_token_cache_seconds(self, processes: Processes) -> None:
        """The documented window: another process that checked the token within the last
        token_cache_seconds still accepts it, and refuses it once they have passed."""
        one, other = processes(token_cache_seconds=10)
        token = one.enroll("web-01", SECRET)
        assert host_of(other, token) == "web-01"
        one.revoke_host("web-01")
        assert host_of(one, token) is None  # the process that revoked it: at once
        assert host_of(other, token) == "web-01"  # the other: from its cache
        later = time.monotonic() + 10.1
        other.clock = lambda: later
        assert host_of(other, token) is None


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
