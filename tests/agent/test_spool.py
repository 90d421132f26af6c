"""The spool: durable, ordered, bounded, and never a crash on a bad file or a bad disk."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from fleetwatch.agent.spool import CorruptEntryError, Spool


class TestSpool:
    def test_reports_come_back_in_sequence_order(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path, 100, 10**7)
        for seq in (3, 1, 2):
            spool.put(seq, f'{{"n": {seq}}}'.encode())
        entries = spool.pending()
        assert [e.sequence for e in entries] == [1, 2, 3]
        assert spool.read(entries[0]) == b'{"n": 1}'

    def test_survives_a_restart(self, tmp_path: Path) -> None:
        """A new Spool on the same directory (an agent restart) sees what was spooled."""
        Spool(tmp_path, 100, 10**7).put(7, b"{}")
        assert [e.sequence for e in Spool(tmp_path, 100, 10**7).pending()] == [7]

    def test_files_are_private(self, tmp_path: Path) -> None:
        Spool(tmp_path, 100, 10**7).put(1, b"{}")
        (path,) = tmp_path.glob("*.json.gz")
        assert path.stat().st_mode & 0o077 == 0

    def test_count_bound_drops_oldest_and_says_how_many(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path, 3, 10**7)
        dropped = [spool.put(seq, b"{}") for seq in range(1, 6)]
        assert dropped == [0, 0, 0, 1, 1]
        assert [e.sequence for e in spool.pending()] == [3, 4, 5]

    def test_byte_bound(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path, 1000, 200_000)
        payload = os.urandom(60_000)  # does not compress
        dropped = sum(spool.put(seq, payload) for seq in range(1, 6))
        assert dropped == 2
        assert [e.sequence for e in spool.pending()] == [3, 4, 5]

    def test_corrupt_file_is_set_aside(self, tmp_path: Path) -> None:
        """A file that is not gzip is moved to corrupt/ and reported, not raised further."""
        spool = Spool(tmp_path, 100, 10**7)
        spool.put(1, b"{}")
        (tmp_path / f"{2:020d}.json.gz").write_bytes(b"garbage")
        spool.put(3, b"{}")
        entries = spool.pending()
        assert spool.read(entries[0]) == b"{}"
        with pytest.raises(CorruptEntryError):
            spool.read(entries[1])
        assert (tmp_path / "corrupt" / f"{2:020d}.json.gz").exists()
        assert [e.sequence for e in spool.pending()] == [1, 3]

    def test_truncated_file_is_set_aside(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path, 100, 10**7)
        (tmp_path / f"{1:020d}.json.gz").write_bytes(gzip.compress(b"x" * 1000)[:20])
        with pytest.raises(CorruptEntryError):
            spool.read(spool.pending()[0])

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories anyway")
    def test_read_only_directory_keeps_reports_in_memory(self, tmp_path: Path) -> None:
        """When the disk refuses, the report is kept in memory and the error is known."""
        directory = tmp_path / "spool"
        directory.mkdir()
        directory.chmod(0o500)
        try:
            spool = Spool(directory, 100, 10**7)
            spool.put(1, b"{}")
            assert spool.error is not None
            assert "cannot write spool file" in spool.error
            (entry,) = spool.pending()
            assert spool.read(entry) == b"{}"
        finally:
            directory.chmod(0o700)

    def test_unwritable_path_keeps_reports_in_memory(self, tmp_path: Path) -> None:
        """A spool 'directory' that is a file (as on a broken disk) is handled the same way."""
        blocker = tmp_path / "spool"
        blocker.write_text("not a directory")
        spool = Spool(blocker, 100, 10**7)
        spool.put(1, b"{}")
        assert spool.error is not None
        (entry,) = spool.pending()
        assert spool.read(entry) == b"{}"
        spool.remove(entry)
        assert spool.pending() == []
