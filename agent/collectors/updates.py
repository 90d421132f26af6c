"""Pending upgrades, security or not.

Asking apt costs seconds and tens of megabytes, so the answer is kept (in memory and in the
state directory, to survive restarts) and reused until the package database, the package
lists or apt's configuration change.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import structlog
from pydantic import BaseModel, ValidationError

from fleetwatch.agent.state import atomic_write
from fleetwatch.schema import UpdatesData

if TYPE_CHECKING:
    from pathlib import Path

    from fleetwatch.agent.package_managers import PackageManager
    from fleetwatch.schema import SectionName

log = structlog.get_logger(__name__)


class _CachedUpdates(BaseModel):
    signature: str
    data: UpdatesData


class UpdatesCollector:
    name: SectionName = "updates"

    def __init__(self, manager: PackageManager, cache_path: Path | None = None) -> None:
        self.manager = manager
        self.cache_path = cache_path
        self._lock = threading.Lock()
        self._cached: _CachedUpdates | None = self._load()

    def collect(self) -> UpdatesData:
        with self._lock:
            signature = self.manager.updates_signature()
            if self._cached is not None and self._cached.signature == signature:
                return self._cached.data
            data = self.manager.pending_updates()
            self._cached = _CachedUpdates(signature=signature, data=data)
            self._store(self._cached)
            return data

    def _load(self) -> _CachedUpdates | None:
        if self.cache_path is None or not self.cache_path.exists():
            return None
        try:
            return _CachedUpdates.model_validate_json(self.cache_path.read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning(
                "updates cache unreadable, asking apt again",
                path=str(self.cache_path),
                error=str(exc)[:200],
            )
            return None

    def _store(self, cached: _CachedUpdates) -> None:
        if self.cache_path is None:
            return
        try:
            atomic_write(self.cache_path, cached.model_dump_json().encode())
        except OSError as exc:
            log.warning(
                "cannot keep the updates cache",
                path=str(self.cache_path),
                error=str(exc),
            )
