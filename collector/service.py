"""The running collector: its database, policy, ingestion and housekeeping, wired together."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector.auth.identity import Identity
from fleetwatch.collector.compliance.findings import Compliance
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.gc_tuning import tune_garbage_collector
from fleetwatch.collector.ingest.queue import IngestQueue
from fleetwatch.collector.ingest.writer import Ingestor
from fleetwatch.collector.storage.db import make_engine, upgrade
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.web.rate_limits import RateLimiter

if TYPE_CHECKING:
    from fleetwatch.collector.settings import CollectorSettings

log = structlog.get_logger(__name__)

PRUNE_EVERY = 3600.0


class CollectorService:
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.engine = make_engine(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        self.store = Store(self.engine)
        self.policy = PolicySource(settings.policy)
        self.compliance = Compliance(self.store)
        self.ingestor = Ingestor(self.store, self.policy, self.compliance)
        self.identity = Identity(self.store, settings, self.policy)
        self.pipeline = IngestQueue(self.ingestor)
        self.host_limiter = RateLimiter(settings.host_rate, settings.host_burst)
        self.enroll_limiter = RateLimiter(settings.enroll_rate, settings.enroll_burst)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, migrate: bool = True) -> None:
        """Migrate, start the writer and housekeeping; a second call does nothing."""
        if self._thread is not None:
            return
        if migrate:
            upgrade(self.engine)
        tune_garbage_collector()
        self.pipeline.start()
        self._thread = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._thread.start()
        log.info(
            "collector started",
            database=self.engine.url.render_as_string(),
            policy=self.policy.current.source,
        )

    def stop(self) -> None:
        """Store what is queued and stop; a second call does nothing."""
        if self._thread is None:
            return
        self.pipeline.stop()
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        self._stop.clear()
        self.engine.dispose()

    def reload_policy(self) -> tuple[bool, int]:
        """Re-read the policy file; if it changed, evaluate every host against it now."""
        if not self.policy.reload_if_changed():
            if self.policy.error:
                log.error(
                    "policy file not loaded; the previous policy stays in force",
                    error=self.policy.error,
                )
            return False, 0
        started = time.monotonic()
        count = self.ingestor.reevaluate_all()
        log.info(
            "policy changed; hosts evaluated again",
            hosts=count,
            digest=self.policy.current.digest[:12],
            seconds=round(time.monotonic() - started, 2),
        )
        return True, count

    def prune(self) -> tuple[int, int]:
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.report_retention_days)
        with self.store.write() as conn:
            return self.store.prune(conn, cutoff)

    def _housekeeping(self) -> None:
        next_prune = time.monotonic() + 60
        while not self._stop.wait(self.settings.policy_check_interval):
            try:
                self.reload_policy()
                if time.monotonic() >= next_prune:
                    reports, contents = self.prune()
                    next_prune = time.monotonic() + PRUNE_EVERY
                    if reports or contents:
                        log.info("pruned old reports", reports=reports, contents=contents)
            except Exception as exc:  # noqa: BLE001  (housekeeping must outlive a bad moment)
                log.error("housekeeping failed", error=f"{type(exc).__name__}: {exc}"[:500])
