from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from fleetwatch.collector.storage.blobs import NewBlob
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import blobs
from tests.collector.storage.conftest import T0, Statements

PAYLOAD = b'{"listeners": []}' * 100


class TestBlobs:
    def test_contents_are_kept_compressed(self, store: Store) -> None:
        with store.write() as conn:
            store.blobs.add(conn, [NewBlob("1" * 64, "ports", PAYLOAD)], T0)
        with store.read() as conn:
            stored = conn.execute(select(blobs.c.data, blobs.c.size)).one()
            assert store.blobs.get(conn, "1" * 64) == PAYLOAD
            assert store.blobs.get(conn, "2" * 64) is None
        assert stored.size == len(PAYLOAD)
        assert len(stored.data) < len(PAYLOAD)

    def test_a_hash_already_held_is_skipped(self, store: Store, statements: Statements) -> None:
        """Two writers may store one content at once: the second insert does nothing."""
        with store.write() as conn:
            store.blobs.add(conn, [NewBlob("1" * 64, "ports", PAYLOAD)], T0)
        statements.clear()
        with store.write() as conn:
            new = [NewBlob(h * 64, "ports", PAYLOAD) for h in "123"]
            store.blobs.add(conn, new, T0)
            assert store.blobs.existing(conn, ["1" * 64, "2" * 64, "4" * 64]) == {
                "1" * 64,
                "2" * 64,
            }
        assert len(statements.of("INSERT")) == 1

    def test_prune_takes_released_contents_no_host_holds(self, store: Store) -> None:
        cutoff = T0 + timedelta(days=30)
        with store.write() as conn:
            store.blobs.add(conn, [NewBlob(h * 64, "ports", PAYLOAD) for h in "1234"], T0)
            store.blobs.release(conn, {"1" * 64: T0, "2" * 64: T0, "3" * 64: cutoff})
            gone = store.blobs.prune(conn, cutoff, keep={"2" * 64})
            left = store.blobs.existing(conn, [h * 64 for h in "1234"])
        # 1: released long ago; 2: held again since; 3: released recently; 4: never released
        assert gone == 1
        assert left == {"2" * 64, "3" * 64, "4" * 64}
