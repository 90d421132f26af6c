"""What the agent keeps between runs, in its state directory.

``state.json`` holds the agent's instance id, the last sequence number it used and, for each
section, the hash the collector last acknowledged; ``token`` holds the host token. Every write
is atomic (a temporary file, fsync, rename, fsync of the directory), so a crash leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import TYPE_CHECKING

import structlog
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from pathlib import Path

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"
TOKEN_FILE = "token"  # noqa: S105  (a file name, not a secret)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in this directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    tmp.replace(path)
    fsync_directory(path.parent)


class SectionBase(BaseModel):
    """A section the collector acknowledged: our hash of its content and the collector's."""

    local: str
    remote: str


class _StateFile(BaseModel):
    instance_id: str
    last_sequence: int = 0
    base: dict[str, SectionBase] = {}
    dropped: int = 0
    token_issued_at: float | None = None  # epoch seconds: when our token was issued


class AgentState:
    """The agent's durable state: instance id, sequence numbers, acknowledged bases, token."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._state = self._load()

    def _load(self) -> _StateFile:
        path = self.directory / STATE_FILE
        if path.exists():
            try:
                return _StateFile.model_validate_json(path.read_bytes())
            except ValidationError as exc:
                aside = path.with_name(f"{STATE_FILE}.corrupt")
                path.replace(aside)
                log.error(
                    "state file corrupt, set aside; starting a new report stream",
                    path=str(path),
                    moved_to=str(aside),
                    error=str(exc)[:300],
                )
        return _StateFile(instance_id=uuid.uuid4().hex)

    def save(self) -> None:
        atomic_write(self.directory / STATE_FILE, self._state.model_dump_json().encode())

    @property
    def instance_id(self) -> str:
        return self._state.instance_id

    @property
    def last_sequence(self) -> int:
        return self._state.last_sequence

    def next_sequence(self) -> int:
        """Take the next sequence number and make it durable before it is used."""
        self._state.last_sequence += 1
        self.save()
        return self._state.last_sequence

    def base(self, section: str) -> SectionBase | None:
        return self._state.base.get(section)

    def set_bases(self, bases: dict[str, SectionBase]) -> None:
        self._state.base.update(bases)
        self.save()

    def clear_bases(self) -> None:
        """Forget every acknowledged section: the next report is sent in full."""
        if self._state.base:
            self._state.base = {}
            self.save()

    @property
    def dropped(self) -> int:
        """Reports lost since the collector last acknowledged one; told in the next report."""
        return self._state.dropped

    def add_dropped(self, count: int) -> None:
        if count:
            self._state.dropped = max(0, self._state.dropped + count)
            self.save()

    @property
    def token_path(self) -> Path:
        return self.directory / TOKEN_FILE

    def read_token(self) -> str | None:
        try:
            token = self.token_path.read_text().strip()
        except FileNotFoundError:
            return None
        return token or None

    def write_token(self, token: str, issued_at: float | None = None) -> None:
        """Store a new host token (mode 0600, owned like the state directory)."""
        atomic_write(self.token_path, token.encode() + b"\n", mode=0o600)
        if os.geteuid() == 0:
            # root runs `fleetwatch-agent rotate-token` by hand; the agent's user must read it
            owner = self.directory.stat()
            os.chown(self.token_path, owner.st_uid, owner.st_gid)
        self._state.token_issued_at = issued_at if issued_at is not None else time.time()
        self.save()

    @property
    def token_age(self) -> float | None:
        """Seconds since our token was issued, when known."""
        issued = self._state.token_issued_at
        return None if issued is None else max(0.0, time.time() - issued)
