"""Persistence: one repository per kind of record, and the transactions they run in.

Each repository owns its table's statements and its record types (``hosts.py``,
``tokens.py``, ``reports.py``, ``blobs.py``, ``findings.py``); ``transactions.py`` owns
transactions and what differs between SQLite and PostgreSQL. A caller opens a transaction
and hands its connection to as many repositories as one change needs::

    with store.write() as conn:
        hosts = store.hosts.get_many(conn, host_ids, lock=True)
        store.reports.add(conn, new_reports)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fleetwatch.collector.storage.blobs import Blobs
from fleetwatch.collector.storage.deliveries import Deliveries
from fleetwatch.collector.storage.events import Events
from fleetwatch.collector.storage.findings import Findings
from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerabilities
from fleetwatch.collector.storage.hosts import Hosts
from fleetwatch.collector.storage.placements import Placements
from fleetwatch.collector.storage.rate_buckets import RateBuckets
from fleetwatch.collector.storage.reports import Reports
from fleetwatch.collector.storage.sessions import Sessions
from fleetwatch.collector.storage.silences import Silences
from fleetwatch.collector.storage.snapshots import Snapshots
from fleetwatch.collector.storage.tokens import ApiTokens, HostTokens
from fleetwatch.collector.storage.transactions import Database
from fleetwatch.collector.storage.vulnerability_data import VulnerabilityData
from fleetwatch.collector.storage.waivers import Waivers

if TYPE_CHECKING:
    import contextlib

    from sqlalchemy import Connection, Engine

# The id of the row `Store.probe_write` adds and removes: not a valid host id, so no host
# can ever hold it.
PROBE_HOST = "(write probe)"


class Store:
    """The collector's repositories over one database."""

    def __init__(self, engine: Engine) -> None:
        self.database = Database(engine)
        self.hosts = Hosts(self.database)
        self.host_tokens = HostTokens()
        self.api_tokens = ApiTokens()
        self.reports = Reports()
        self.blobs = Blobs(self.database)
        self.findings = Findings()
        self.events = Events()
        self.vulnerability_data = VulnerabilityData()
        self.host_vulnerabilities = HostVulnerabilities()
        # the dashboard's: browser sessions, the policy's placement of hosts, fleet snapshots
        self.sessions = Sessions()
        self.placements = Placements()
        self.snapshots = Snapshots()
        self.waivers = Waivers()
        self.silences = Silences()
        self.deliveries = Deliveries(self.database)
        self.rate_buckets = RateBuckets(self.database)

    def write(self) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction, committed when the block ends without an exception."""
        return self.database.write()

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for reading."""
        return self.database.read()

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        self.database.ping()

    def probe_write(self) -> None:
        """Raise unless a write commits: a host row no host can have (its id breaks the host id
        pattern) added and removed in one transaction. It changes nothing anyone sees, yet
        its commit writes to the database as a report's would."""
        with self.write() as conn:
            self.hosts.create(conn, PROBE_HOST, None, datetime.now(UTC))
            self.hosts.delete(conn, PROBE_HOST)

    def prune(self, conn: Connection, older_than: datetime) -> tuple[int, int]:
        """Delete old reports (never a host's latest) and contents no host holds any more.

        A content released before ``older_than`` can only be referred to by reports that are
        older still, which go in the same pass. Returns (reports deleted, contents deleted).
        """
        reports = self.reports.prune(conn, older_than)
        contents = self.blobs.prune(conn, older_than, keep=self.hosts.held_contents(conn))
        return reports, contents
