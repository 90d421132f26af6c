"""The collector's tables. Alembic migrations in ``collector/migrations`` create and change them.

Section contents are stored once per distinct content, in ``blobs``, keyed by their hash:
reports and hosts refer to them, so a package list that does not change is stored once
however many reports repeat it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    case,
    text,
    true,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            msg = "naive datetime given to the database"
            raise ValueError(msg)
        value = value.astimezone(UTC)
        # SQLite keeps text; without the offset it compares correctly in SQL
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# BIGINT autoincrement keys, which SQLite spells INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

hosts = Table(
    "hosts",
    metadata,
    Column("host_id", String(253), primary_key=True),
    Column("unit", String(255), nullable=True),
    Column("enrolled_at", UTCDateTime(), nullable=False),
    Column("reenroll_until", UTCDateTime(), nullable=True),
    Column("instance_id", String(32), nullable=True),
    Column("last_sequence", BigInteger(), nullable=True),
    Column("last_collected_at", UTCDateTime(), nullable=True),
    Column("last_received_at", UTCDateTime(), nullable=True),
    Column("agent_version", String(255), nullable=True),
    # section name -> {"hash": last content hash held, "error": why the last report lacked it}
    Column("sections", JSON(), nullable=False, default=dict),
    # since when aging conditions hold: {"security_update": {package: iso time}, ...}
    Column("conditions", JSON(), nullable=False, default=dict),
    Column("dropped_total", BigInteger(), nullable=False, default=0),
    # the agent's last word on its spool (a full or read-only disk), None when all is well
    Column("spool_error", Text(), nullable=True),
    # sections whose content changes with every report (load, memory, disk use), kept here
    # as their latest canonical JSON instead of one stored content per report
    Column("inline", JSON(), nullable=False, default=dict),
    # what the host was last evaluated against: its baseline, unit and groups and the
    # vulnerability data (`compliance.reevaluation`); None before its first evaluation
    Column("baseline_digest", String(64), nullable=True),
    # the host's report rate bucket, shared by every collector process (`rate_limits`): its
    # tokens at report_tokens_at (seconds since the epoch); NULL until its first report
    Column("report_tokens", Float(), nullable=True),
    Column("report_tokens_at", Float(), nullable=True),
    # the newest report received, for /metrics, without a pass over every host
    Index(None, "last_received_at"),
)

# The fleet's other rate limits (enrollment per address, rotations per host, admin writes per
# API token), shared by every collector process: one token bucket per key (`auth.limits`).
rate_buckets = Table(
    "rate_buckets",
    metadata,
    # "<limit>:<key>", e.g. "enroll:192.0.2.7"
    Column("key", String(300), primary_key=True),
    Column("tokens", Float(), nullable=False),
    # seconds since the epoch: the wall clock, as the collectors share it
    Column("at", Float(), nullable=False),
)

# When a host's latest facts were true (`HostRow.observed_at`), indexed: hosts sorted by last
# report, and the stale ones counted, walk this index. Queries must use this expression as
# written for the index to serve them.
OBSERVED = case(
    (hosts.c.last_collected_at < hosts.c.last_received_at, hosts.c.last_collected_at),
    else_=hosts.c.last_received_at,
)
Index(
    "ix_hosts_observed",
    # as PostgreSQL prints it back, line breaks and all, so that the schema compares equal
    text(
        "\nCASE\n    WHEN last_collected_at < last_received_at THEN last_collected_at\n"
        "    ELSE last_received_at\nEND"
    ),
    hosts.c.host_id,
)

host_tokens = Table(
    "host_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "host_id",
        String(253),
        ForeignKey("hosts.host_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # indexed: each process asks for the tokens revoked lately (`Identity.follow_revocations`)
    Column("revoked_at", UTCDateTime(), nullable=True, index=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    # admin: everything; read: every host, read only; enroll: enrolls hosts (into its unit)
    Column("kind", String(16), nullable=False),
    Column("unit", String(255), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
)

blobs = Table(
    "blobs",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("section", String(32), nullable=False),
    Column("data", LargeBinary(), nullable=False),  # zstd-compressed canonical JSON
    Column("size", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # when a host last moved away from this content; current contents are never pruned
    Column("released_at", UTCDateTime(), nullable=True),
)

reports = Table(
    "reports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "host_id",
        String(253),
        ForeignKey("hosts.host_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("instance_id", String(32), nullable=False),
    Column("sequence", BigInteger(), nullable=False),
    Column("collected_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("agent_version", String(255), nullable=False),
    Column("sections", JSON(), nullable=False),  # section -> content hash
    Column("errors", JSON(), nullable=False),  # section -> error text
    Column("missing", JSON(), nullable=False),  # sections sent as a hash we did not hold
    Column("dropped", BigInteger(), nullable=False, default=0),
    Column("spool_error", Text(), nullable=True),
    # the reports after this one, up to `through`, brought nothing new: they extend this row
    # instead of having rows of their own; `last_received_at` is when the last of them came
    Column("through", BigInteger(), nullable=True),
    Column("last_received_at", UTCDateTime(), nullable=True),
    UniqueConstraint("host_id", "instance_id", "sequence"),
    Index(None, "host_id", "received_at"),
    Index(None, "received_at"),
    Index(None, "host_id", "id"),  # a host's reports, paged newest first
)

findings = Table(
    "findings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "host_id",
        String(253),
        ForeignKey("hosts.host_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("rule", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("detail", Text(), nullable=False),
    Column("first_seen", UTCDateTime(), nullable=False),
    # when a report last found it, as of the finding's last change: while it is open and its
    # host's latest evaluation found it (`seen_in_latest`), that evaluation's report is when it
    # was last seen, and the row is not rewritten for every report that still finds it
    Column("last_seen", UTCDateTime(), nullable=False),
    Column("seen_in_latest", Boolean(), nullable=False, server_default=true()),
    Column("resolved_at", UTCDateTime(), nullable=True),
    # the response to it (compliance/lifecycle.py): open, acknowledged, resolved, verified
    Column("state", String(16), nullable=False, server_default="open"),
    Column("acknowledged_by", String(255), nullable=True),
    Column("acknowledged_at", UTCDateTime(), nullable=True),
    Column("note", Text(), nullable=True),
    Column("due_at", UTCDateTime(), nullable=True),
    # when it was announced overdue (once per due date)
    Column("overdue_at", UTCDateTime(), nullable=True),
    # the waiver in force over it, if any: it then does not count against its host
    Column("waiver_id", BigInteger(), nullable=True),
    # reports since it was resolved that did not find it again (verification)
    Column("clean_reports", Integer(), nullable=False, server_default="0"),
    Column("verified_at", UTCDateTime(), nullable=True),
    Column("reopened", Integer(), nullable=False, server_default="0"),
    Index(None, "host_id", "resolved_at"),
    Index(None, "state", "due_at"),
    Index(None, "rule", "resolved_at"),
    # the API's findings, paged by id, of one severity or rule
    Index(None, "severity", "id"),
    Index(None, "rule", "id"),
    # at most one open finding per host, rule and subject
    Index(
        "uq_findings_open",
        "host_id",
        "rule",
        "key",
        unique=True,
        sqlite_where=Column("resolved_at").is_(None),
        postgresql_where=Column("resolved_at").is_(None),
    ),
)


# --- The event log: every change to a finding, waiver or host that someone may be told of ---
# Append-only (nothing updates or deletes a row but pruning by age): the audit trail the
# office keeps, and the outbox notifications are sent from. A change and its event are
# written in one transaction, so an event exists exactly when its change does.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),  # see storage/events.py: EVENT_KINDS
    Column("actor", String(255), nullable=False),  # "collector", or the API token's name
    Column("host_id", String(253), nullable=True),
    Column("unit", String(255), nullable=True),
    Column("finding_id", BigInteger(), nullable=True),
    Column("rule", String(64), nullable=True),
    Column("severity", String(16), nullable=True),
    Column("subject", String(512), nullable=True),  # the finding's key, a waiver's pattern...
    Column("detail", JSON(), nullable=False),
    Index(None, "finding_id"),
    Index(None, "host_id", "at"),
    Index(None, "unit", "at"),
    Index(None, "at"),
)


# -- vulnerability data ---------------------------------------------------------------------

# One row per data set (debian-tracker, osv-debian, osv-ubuntu, kev): an import replaces its
# row in one transaction, so a process reads either the old data set or the new, never half.
vulnerability_datasets = Table(
    "vulnerability_datasets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("source", Text(), nullable=False),  # the file, directory or URL imported
    Column("imported_at", UTCDateTime(), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the stored payload: names the content
    Column("counts", JSON(), nullable=False),
    Column("data", LargeBinary(), nullable=False),  # zstd-compressed JSON rows
)

# What each host carries now: replaced as its reports (or new data) are evaluated.
host_vulnerabilities = Table(
    "host_vulnerabilities",
    metadata,
    Column(
        "host_id",
        String(253),
        ForeignKey("hosts.host_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("vuln", String(128), nullable=False),
    Column("source", String(255), nullable=False),
    Column("release", String(64), nullable=False),
    Column("installed_version", String(255), nullable=False),
    Column("fixed_version", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("severity", String(16), nullable=True),
    Column("urgency", String(64), nullable=True),
    Column("cvss", Float(), nullable=True),
    Column("fixable", Boolean(), nullable=False),
    Column("exploited", Boolean(), nullable=False),
    Column("flags", JSON(), nullable=False),
    Column("advisories", JSON(), nullable=False),
    Column("binaries", JSON(), nullable=False),
    Column("fix_since", UTCDateTime(), nullable=True),
    Column("note", Text(), nullable=True),
    Column("first_seen", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("host_id", "vuln", "source"),
    # one vulnerability's hosts, in the listing's order (the primary key's, host first)
    Index(None, "vuln", "host_id", "source"),
)

# -- dashboard: browser sessions, where each host stands in the policy, fleet snapshots --------

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # sha256 of the session id the browser holds in its cookie; the id itself is never stored
    Column("session_hash", String(64), nullable=False, unique=True),
    # the API token signed in with (None: the bootstrap admin token of the settings); revoking
    # the token ends its sessions
    Column(
        "token_id",
        BigId,
        ForeignKey("api_tokens.id", ondelete="CASCADE"),
        nullable=True,
        index=True,
    ),
    Column("name", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("unit", String(255), nullable=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

# Every host the policy lists or that enrolled, with what the policy says of it, kept by the
# housekeeper so that the dashboard filters, counts and pages hosts in SQL.
host_placements = Table(
    "host_placements",
    metadata,
    Column("host_id", String(253), primary_key=True),
    Column("unit", String(255), nullable=True, index=True),
    # " web db " (space around each name): a group filter is LIKE '% web %'
    Column("groups", Text(), nullable=False, default=" "),
    # indexed: the dashboard asks for the distinct ages at every page
    Column("max_report_age", Integer(), nullable=False, index=True),
    Column("listed", Integer(), nullable=False, default=0),
    # kept by triggers (migration 0011), never written by code: whether the host reported
    # (hosts.last_received_at set) and how many findings count against it (open, not waived)
    Column("reported", Integer(), nullable=False, server_default="0"),
    Column("open_findings", Integer(), nullable=False, server_default="0"),
    Index(None, "unit", "host_id"),
    Index(None, "reported", "host_id"),
)

# Placed hosts per unit ("" for none), whether they reported, whether a finding counts
# against them: kept by triggers as placements, hosts and findings change, in the same
# transaction, so that counting the fleet by unit and status reads a few rows
# (`storage.tallies`), not every host.
fleet_tallies = Table(
    "fleet_tallies",
    metadata,
    Column("unit", String(255), nullable=False),
    Column("reported", Integer(), nullable=False),
    Column("has_open", Integer(), nullable=False),
    Column("hosts", Integer(), nullable=False),
    PrimaryKeyConstraint("unit", "reported", "has_open"),
)

# Counts per unit ("" for hosts without one) at a moment: one row per unit and snapshot.
# kind "live" is rewritten at every housekeeping round; "hour" and "day" are kept for trends.
fleet_snapshots = Table(
    "fleet_snapshots",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
    Column("unit", String(255), nullable=False),
    Column("hosts", Integer(), nullable=False),
    Column("compliant", Integer(), nullable=False),
    Column("noncompliant", Integer(), nullable=False),
    Column("stale", Integer(), nullable=False),
    Column("never_reported", Integer(), nullable=False),
    Column("open_critical", Integer(), nullable=False),
    Column("open_high", Integer(), nullable=False),
    Column("open_medium", Integer(), nullable=False),
    Column("open_low", Integer(), nullable=False),
    # rule -> open findings of the unit's hosts
    Column("rules", JSON(), nullable=False, default=dict),
    # covering the trends' sums: they read the index alone, never the rows with their rules
    Index(
        "ix_fleet_snapshots_trends",
        "kind",
        "taken_at",
        "unit",
        "hosts",
        "compliant",
        "noncompliant",
        "stale",
        "never_reported",
        "open_critical",
        "open_high",
        "open_medium",
        "open_low",
    ),
)


# --- Response: waivers, and what the collector noticed about silent hosts -----------------
# A waiver excuses findings of one rule whose subject matches a pattern, on a host, a unit's
# hosts or a group's, until it expires. Waivers from the policy file are kept here too
# (source "policy", by their name in the file), so that one table answers what is in force.
waivers = Table(
    "waivers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),  # "api" or "policy"
    Column("name", String(255), nullable=True),  # a policy waiver's name in the file
    Column("scope", String(8), nullable=False),  # host, unit or group
    Column("target", String(255), nullable=False),  # the host id, unit or group name
    Column("rule", String(64), nullable=False),
    Column("pattern", String(512), nullable=False),  # fnmatch-style, on the finding's key
    Column("reason", Text(), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("revoked_by", String(255), nullable=True),
    Column("expiring_announced_at", UTCDateTime(), nullable=True),
    Column("expired_announced_at", UTCDateTime(), nullable=True),
    Index(None, "expires_at"),
    Index(None, "scope", "target"),
)

# A host the housekeeper found silent (never reported, or stale), so that it is announced
# once, and once more when it comes back. Policy hosts that never enrolled have no hosts row.
host_silences = Table(
    "host_silences",
    metadata,
    Column("host_id", String(253), primary_key=True),
    Column("noticed_at", UTCDateTime(), nullable=False),
    Column("condition", String(16), nullable=False),  # never_reported, stale or pending
    Column("announced_at", UTCDateTime(), nullable=True),
)


# -- notifications: the sender's place in the event log, and what it sent to whom ---------

# How far the sender has read the event log (one row, name "sender"): advanced in the
# transaction that records the deliveries of the events it passed.
notification_cursor = Table(
    "notification_cursor",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("event_id", BigInteger(), nullable=False),
)

# One message to one target: an event, a storm's summary, a unit's digest. Its id is the
# idempotency key the receiver is given.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("target", String(64), nullable=False),
    Column("unit", String(255), nullable=True),
    Column("kind", String(16), nullable=False),  # event | summary | digest
    Column("content", JSON(), nullable=False),  # what the message says, kept as planned
    Column("state", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_attempt_at", UTCDateTime(), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("sent_at", UTCDateTime(), nullable=True),
    Index(None, "state", "next_attempt_at"),
    Index(None, "target", "state"),
)

# Each event meant for a target, once: the key is what makes "never twice for one event" a
# constraint. delivery_id is the message that carries it (NULL while it waits for a digest).
delivery_events = Table(
    "delivery_events",
    metadata,
    Column("event_id", BigInteger(), primary_key=True),
    Column("target", String(64), primary_key=True),
    Column("unit", String(255), nullable=True),
    Column("delivery_id", BigInteger(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # the event as a digest will tell it, kept while it waits for one
    Column("item", JSON(none_as_null=True), nullable=True),
    Index(None, "delivery_id"),
)
