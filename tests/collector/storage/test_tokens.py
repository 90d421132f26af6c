from __future__ import annotations

from datetime import timedelta

from fleetwatch.collector.storage.store import Store
from tests.collector.storage.conftest import T0, enroll


class TestHostTokens:
    def test_a_token_names_its_host_and_older_tokens(self, store: Store) -> None:
        """While a rotation is under way the newer token says that an older one is active."""
        enroll(store, "a")
        with store.write() as conn:
            store.host_tokens.add(conn, "a", "old", T0)
            store.host_tokens.add(conn, "a", "new", T0)
        with store.read() as conn:
            assert store.host_tokens.host_for(conn, "old") == ("a", False)
            assert store.host_tokens.host_for(conn, "new") == ("a", True)
            assert store.host_tokens.host_for(conn, "unknown") is None

    def test_revoke_may_spare_one(self, store: Store) -> None:
        enroll(store, "a")
        with store.write() as conn:
            for digest in ("1", "2", "3"):
                store.host_tokens.add(conn, "a", digest, T0)
            assert store.host_tokens.revoke(conn, "a", T0, except_hash="3") == 2
            assert store.host_tokens.host_for(conn, "3") == ("a", False)
            assert store.host_tokens.host_for(conn, "1") is None
            assert store.host_tokens.revoke(conn, "a", T0) == 1


class TestApiTokens:
    def test_active_tokens_are_found_by_hash_until_revoked(self, store: Store) -> None:
        with store.write() as conn:
            token_id = store.api_tokens.add(
                conn, name="ci", kind="read", unit=None, token_hash="h", now=T0
            )
        with store.read() as conn:
            row = store.api_tokens.active(conn, "h")
        assert row is not None
        assert (row.id, row.name, row.kind, row.created_at) == (token_id, "ci", "read", T0)
        with store.write() as conn:
            assert store.api_tokens.revoke(conn, token_id, T0 + timedelta(days=1))
            assert not store.api_tokens.revoke(conn, token_id, T0 + timedelta(days=2))
            assert store.api_tokens.active(conn, "h") is None
            (listed,) = store.api_tokens.all(conn)
        assert listed.revoked_at == T0 + timedelta(days=1)

    def test_rows_never_carry_the_hash(self, store: Store) -> None:
        with store.write() as conn:
            store.api_tokens.add(conn, name="ci", kind="admin", unit="x", token_hash="h", now=T0)
            (listed,) = store.api_tokens.all(conn)
        assert "h" not in vars(listed).values()
        assert not hasattr(listed, "token_hash")
