"""Durable delivery: every report is on disk before it is sent, and leaves only when acknowledged.

A report is one gzip file, ``<sequence>.json.gz``, written atomically and fsynced. Reports are
sent in sequence order. The spool is bounded by count and bytes; when it is full the oldest
reports go first and the caller is told how many, so the loss can be reported to the collector.
A file that cannot be read back is moved to ``corrupt/`` and logged, never a crash.

When the spool directory cannot be written (full disk, read-only mount) the report is kept in
memory instead and ``error`` says why, so the agent keeps running and can say so in its next
report.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from fleetwatch.agent.state import atomic_write, fsync_directory

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^(\d{20})\.json\.gz$")


class CorruptEntryError(Exception):
    """A spooled report that cannot be read back."""


@dataclass(frozen=True)
class Entry:
    sequence: int
    size: int
    path: Path | None = None  # None: held in memory because the disk refused it
    payload: bytes | None = None


class Spool:
    def __init__(self, directory: Path, max_reports: int, max_bytes: int) -> None:
        self.directory = directory
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.error: str | None = None
        self._memory: dict[int, bytes] = {}

    def put(self, sequence: int, payload: bytes) -> int:
        """Spool one report's JSON; return how many old reports were dropped to make room."""
        compressed = gzip.compress(payload, compresslevel=6, mtime=0)
        path = self.directory / f"{sequence:020d}.json.gz"
        try:
            atomic_write(path, compressed)
        except OSError as exc:
            self.error = f"cannot write spool file {path}: {exc.strerror or exc}"
            log.error("spool write failed, keeping the report in memory", error=self.error)
            self._memory[sequence] = compressed
        else:
            self.error = None
        return self._enforce_bounds()

    def pending(self) -> list[Entry]:
        """Spooled reports, oldest first."""
        entries = {seq: Entry(seq, len(data), payload=data) for seq, data in self._memory.items()}
        try:
            scanned = list(os.scandir(self.directory))
        except FileNotFoundError:
            scanned = []
        except OSError as exc:
            self.error = f"cannot list spool directory {self.directory}: {exc.strerror}"
            scanned = []
        for item in scanned:
            match = _NAME.match(item.name)
            if match is None:
                continue
            try:
                size = item.stat().st_size
            except OSError:
                continue
            entries[int(match[1])] = Entry(int(match[1]), size, path=self.directory / item.name)
        return [entries[seq] for seq in sorted(entries)]

    def read(self, entry: Entry) -> bytes:
        """The report's JSON; raise CorruptEntryError (after setting the file aside) if broken."""
        try:
            compressed = entry.payload if entry.payload is not None else self._read_file(entry)
            return gzip.decompress(compressed)
        except (OSError, EOFError, zlib.error) as exc:
            self.set_aside(entry, str(exc))
            raise CorruptEntryError(str(exc)) from exc

    @staticmethod
    def _read_file(entry: Entry) -> bytes:
        assert entry.path is not None
        return entry.path.read_bytes()

    def remove(self, entry: Entry) -> None:
        self._memory.pop(entry.sequence, None)
        if entry.path is not None:
            try:
                entry.path.unlink(missing_ok=True)
                fsync_directory(self.directory)
            except OSError as exc:
                self.error = f"cannot remove spool file {entry.path}: {exc.strerror}"
                log.error("spool remove failed", error=self.error)

    def set_aside(self, entry: Entry, reason: str) -> None:
        """Move a report that can never be delivered out of the way, keeping it for inspection."""
        self._memory.pop(entry.sequence, None)
        log.error("spooled report set aside", sequence=entry.sequence, reason=reason[:300])
        if entry.path is None:
            return
        aside = self.directory / "corrupt"
        try:
            aside.mkdir(exist_ok=True, mode=0o700)
            entry.path.replace(aside / entry.path.name)
        except OSError as exc:
            log.error("cannot set spool file aside", path=str(entry.path), error=exc.strerror)

    def _enforce_bounds(self) -> int:
        entries = self.pending()
        total = sum(e.size for e in entries)
        dropped = 0
        # The newest report is never dropped: it is the freshest view of the host.
        while len(entries) > 1 and (len(entries) > self.max_reports or total > self.max_bytes):
            oldest = entries.pop(0)
            total -= oldest.size
            self.remove(oldest)
            dropped += 1
        if dropped:
            log.warning(
                "spool full, dropped the oldest reports",
                dropped=dropped,
                kept=len(entries),
            )
        return dropped
