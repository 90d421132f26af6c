"""The running collector: its database, policy, ingestion and housekeeping, wired together."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import DBAPIError

from fleetwatch.collector import instruments
from fleetwatch.collector.auth.identity import Identity
from fleetwatch.collector.auth.sessions import SessionKeeper
from fleetwatch.collector.compliance.casework import Casework
from fleetwatch.collector.compliance.findings import Compliance
from fleetwatch.collector.compliance.placement import FleetRecorder
from fleetwatch.collector.compliance.policy import PolicySource
from fleetwatch.collector.gc_tuning import tune_garbage_collector
from fleetwatch.collector.housekeeping import Housekeeper
from fleetwatch.collector.ingest.queue import IngestQueue
from fleetwatch.collector.ingest.readiness import Readiness
from fleetwatch.collector.ingest.writer import Ingestor
from fleetwatch.collector.notifications.config import NotificationsSource
from fleetwatch.collector.notifications.sender import Sender
from fleetwatch.collector.notifications.units import units_of
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.vulns.data import KnownVulnerabilities

if TYPE_CHECKING:
    from datetime import datetime

    from fleetwatch.collector.settings import CollectorSettings

log = structlog.get_logger(__name__)

RATE_BUCKETS_KEPT = 86400.0  # seconds a rate bucket nobody uses stays in the database


class CollectorService:
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.engine = make_engine(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        self.store = Store(self.engine)
        self.policy = PolicySource(settings.policy, on_reload=_count_policy_reload)
        self.vulnerabilities = KnownVulnerabilities(self.store, settings.vulnerability_releases)
        self.compliance = Compliance(self.store, vulnerabilities=self.vulnerabilities)
        self.identity = Identity(self.store, settings, self.policy)
        # a host's report rate is shared through its row, which the writer keeps
        self.host_limiter = self.identity.host_reports
        self.ingestor = Ingestor(
            self.store, self.policy, self.compliance, host_limiter=self.host_limiter
        )
        self.ingest_queue = IngestQueue(
            self.ingestor,
            readiness=Readiness(self.store, settings.ready_probe_after),
            max_wait=settings.ingest_max_wait,
            retry_after_max=settings.ingest_retry_after_max,
        )
        self.sessions = SessionKeeper(self.store, self.identity, settings)
        self.fleet_recorder = FleetRecorder(self.store, self.policy)
        self.casework = Casework(self.store, self.policy)
        self.housekeeper = Housekeeper(
            settings,
            self.engine,
            self.policy,
            reevaluate=self.ingestor.reevaluate,
            prune=self._prune,
            vulnerabilities=self.vulnerabilities,
            snapshot=self.fleet_recorder.refresh,
            tick=self.casework.tick,
        )
        self.notifications = NotificationsSource(settings.notifications)
        self.sender = Sender(
            settings, self.store, self.notifications, lambda: units_of(self.policy.current)
        )
        self._started = False

    def start(self, *, migrate: bool = True) -> None:
        """Migrate, start the writer and housekeeping; a second call does nothing."""
        if self._started:
            return
        if migrate:
            upgrade(self.engine)
        self.vulnerabilities.refresh()
        self._place_hosts()
        tune_garbage_collector()
        self.ingest_queue.start()
        self.housekeeper.start()
        self.sender.start()
        self._started = True
        log.info(
            "collector started",
            database=self.engine.url.render_as_string(),
            policy=self.policy.current.source,
        )

    def _place_hosts(self) -> None:
        """Place the hosts by the policy before serving host lists (they read the placements);
        if another process is doing it at the same moment, the housekeeper's round will."""
        try:
            self.fleet_recorder.place()
        except DBAPIError as exc:
            log.warning("hosts not placed at start", error=str(exc).splitlines()[0])

    def stop(self) -> None:
        """Store what is queued and stop; a second call does nothing."""
        if not self._started:
            return
        self.ingest_queue.stop()
        self.housekeeper.stop()
        self.sender.stop()
        self._started = False
        self.engine.dispose()

    def reload_policy(self) -> tuple[bool, int]:
        """Re-read the policy file now; if it changed, evaluate here the hosts it changes.

        (The housekeeper of the fleet would do it at its next round; an admin who asks wants
        it done before the answer.)
        """
        if not self.housekeeper.follow_policy():
            return False, 0
        self.fleet_recorder.place()  # host lists read the placements: in step before answering
        return True, self.housekeeper.reevaluate()

    def follow_vulnerabilities(self) -> int:
        """Load new vulnerability data now and evaluate every host that reported against it
        here; return how many hosts were evaluated (0 when the data did not change)."""
        self.housekeeper.follow_vulnerabilities()
        if self.housekeeper.generation == self.housekeeper.evaluated_generation:
            return 0
        return self.housekeeper.reevaluate()

    def prune(self) -> tuple[int, int]:
        """Delete reports and contents past retention now; (reports, contents) deleted."""
        return self.housekeeper.prune()

    def _prune(self, cutoff: datetime) -> tuple[int, int]:
        with self.store.write() as conn:
            # a rate bucket untouched for a day is full again for any limit worth having
            self.store.rate_buckets.prune(conn, time.time() - RATE_BUCKETS_KEPT)
            return self.store.prune(conn, cutoff)


def _count_policy_reload(outcome: str) -> None:
    instruments.POLICY_RELOADS.labels(outcome).inc()
    instruments.POLICY_ERROR.set(1 if outcome == "rejected" else 0)
