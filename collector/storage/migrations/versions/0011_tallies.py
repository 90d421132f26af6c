"""Indexes for paged lists, and the fleet's counts kept as they change (triggers).

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0013"
branch_labels = None
depends_on = None

# When a host's latest facts were true (`HostRow.observed_at`): indexed, for the hosts sorted
# by last report and the stale ones counted.
OBSERVED_SQL = (
    "(CASE WHEN last_collected_at < last_received_at THEN last_collected_at"
    " ELSE last_received_at END)"
)
COUNTS = "resolved_at IS NULL AND waiver_id IS NULL"  # a finding that counts against its host

# SQLite: each trigger a statement. A host's placement holds whether it reported and how many
# findings count against it; fleet_tallies holds how many placed hosts each unit has of each
# (reported, has an open finding) pair, moved when a placement's unit or either value changes.
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER tally_finding_insert AFTER INSERT ON findings
    WHEN NEW.resolved_at IS NULL AND NEW.waiver_id IS NULL BEGIN
    UPDATE host_placements SET open_findings = open_findings + 1 WHERE host_id = NEW.host_id;
    END""",
    f"""CREATE TRIGGER tally_finding_delete AFTER DELETE ON findings
    WHEN OLD.resolved_at IS NULL AND OLD.waiver_id IS NULL BEGIN
    UPDATE host_placements SET open_findings = open_findings - 1 WHERE host_id = OLD.host_id;
    END""",
    """CREATE TRIGGER tally_finding_update AFTER UPDATE OF resolved_at, waiver_id ON findings
    WHEN (OLD.resolved_at IS NULL AND OLD.waiver_id IS NULL)
      <> (NEW.resolved_at IS NULL AND NEW.waiver_id IS NULL) BEGIN
    UPDATE host_placements SET open_findings = open_findings
      + (CASE WHEN NEW.resolved_at IS NULL AND NEW.waiver_id IS NULL THEN 1 ELSE -1 END)
      WHERE host_id = NEW.host_id;
    END""",
    """CREATE TRIGGER tally_host_insert AFTER INSERT ON hosts
    WHEN NEW.last_received_at IS NOT NULL BEGIN
    UPDATE host_placements SET reported = 1 WHERE host_id = NEW.host_id;
    END""",
    """CREATE TRIGGER tally_host_update AFTER UPDATE OF last_received_at ON hosts
    WHEN (OLD.last_received_at IS NULL) <> (NEW.last_received_at IS NULL) BEGIN
    UPDATE host_placements
      SET reported = (CASE WHEN NEW.last_received_at IS NULL THEN 0 ELSE 1 END)
      WHERE host_id = NEW.host_id;
    END""",
    """CREATE TRIGGER tally_host_delete AFTER DELETE ON hosts BEGIN
    UPDATE host_placements SET reported = 0 WHERE host_id = OLD.host_id AND reported = 1;
    END""",
    f"""CREATE TRIGGER tally_placement_insert AFTER INSERT ON host_placements BEGIN
    INSERT INTO fleet_tallies (unit, reported, has_open, hosts)
      VALUES (coalesce(NEW.unit, ''), NEW.reported,
              CASE WHEN NEW.open_findings > 0 THEN 1 ELSE 0 END, 1)
      ON CONFLICT (unit, reported, has_open) DO UPDATE SET hosts = hosts + 1;
    UPDATE host_placements SET
      reported = (SELECT count(*) FROM hosts
                  WHERE hosts.host_id = NEW.host_id AND hosts.last_received_at IS NOT NULL),
      open_findings = (SELECT count(*) FROM findings
                       WHERE findings.host_id = NEW.host_id AND {COUNTS})
      WHERE host_id = NEW.host_id;
    END""",
    """CREATE TRIGGER tally_placement_delete AFTER DELETE ON host_placements BEGIN
    UPDATE fleet_tallies SET hosts = hosts - 1
      WHERE unit = coalesce(OLD.unit, '') AND reported = OLD.reported
        AND has_open = (CASE WHEN OLD.open_findings > 0 THEN 1 ELSE 0 END);
    END""",
    """CREATE TRIGGER tally_placement_update AFTER UPDATE OF unit, reported, open_findings
    ON host_placements
    WHEN coalesce(OLD.unit, '') <> coalesce(NEW.unit, '') OR OLD.reported <> NEW.reported
      OR (OLD.open_findings > 0) <> (NEW.open_findings > 0) BEGIN
    UPDATE fleet_tallies SET hosts = hosts - 1
      WHERE unit = coalesce(OLD.unit, '') AND reported = OLD.reported
        AND has_open = (CASE WHEN OLD.open_findings > 0 THEN 1 ELSE 0 END);
    INSERT INTO fleet_tallies (unit, reported, has_open, hosts)
      VALUES (coalesce(NEW.unit, ''), NEW.reported,
              CASE WHEN NEW.open_findings > 0 THEN 1 ELSE 0 END, 1)
      ON CONFLICT (unit, reported, has_open) DO UPDATE SET hosts = hosts + 1;
    END""",
)
SQLITE_DROP = tuple(
    f"DROP TRIGGER IF EXISTS tally_{name}"
    for name in (
        "finding_insert", "finding_delete", "finding_update", "host_insert", "host_update",
        "host_delete", "placement_insert", "placement_delete", "placement_update",
    )
)  # fmt: skip

# PostgreSQL: a function per table, its row triggers.
POSTGRES_TRIGGERS = (
    f"""CREATE FUNCTION tally_finding() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      was_counted int := 0;
      now_counted int := 0;
    BEGIN
      IF TG_OP <> 'INSERT' AND OLD.resolved_at IS NULL AND OLD.waiver_id IS NULL THEN
        was_counted := 1;
      END IF;
      IF TG_OP <> 'DELETE' AND NEW.resolved_at IS NULL AND NEW.waiver_id IS NULL THEN
        now_counted := 1;
      END IF;
      IF TG_OP = 'DELETE' THEN
        UPDATE host_placements SET open_findings = open_findings - was_counted
          WHERE host_id = OLD.host_id AND was_counted > 0;
      ELSIF now_counted <> was_counted THEN
        UPDATE host_placements SET open_findings = open_findings + now_counted - was_counted
          WHERE host_id = NEW.host_id;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER tally_finding AFTER INSERT OR DELETE OR UPDATE OF resolved_at, waiver_id
    ON findings FOR EACH ROW EXECUTE FUNCTION tally_finding()""",
    """CREATE FUNCTION tally_host() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        UPDATE host_placements SET reported = 0 WHERE host_id = OLD.host_id AND reported = 1;
      ELSIF TG_OP = 'INSERT' OR (OLD.last_received_at IS NULL) <> (NEW.last_received_at IS NULL)
      THEN
        UPDATE host_placements
          SET reported = CASE WHEN NEW.last_received_at IS NULL THEN 0 ELSE 1 END
          WHERE host_id = NEW.host_id;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER tally_host AFTER INSERT OR DELETE OR UPDATE OF last_received_at
    ON hosts FOR EACH ROW EXECUTE FUNCTION tally_host()""",
    f"""CREATE FUNCTION tally_placement_fill() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      NEW.reported := (SELECT count(*) FROM hosts
                       WHERE hosts.host_id = NEW.host_id AND hosts.last_received_at IS NOT NULL);
      NEW.open_findings := (SELECT count(*) FROM findings
                            WHERE findings.host_id = NEW.host_id AND {COUNTS});
      RETURN NEW;
    END $$""",
    """CREATE TRIGGER tally_placement_fill BEFORE INSERT ON host_placements
    FOR EACH ROW EXECUTE FUNCTION tally_placement_fill()""",
    """CREATE FUNCTION tally_placement() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND coalesce(OLD.unit, '') = coalesce(NEW.unit, '')
         AND OLD.reported = NEW.reported
         AND (OLD.open_findings > 0) = (NEW.open_findings > 0) THEN
        RETURN NULL;
      END IF;
      IF TG_OP <> 'INSERT' THEN
        UPDATE fleet_tallies SET hosts = hosts - 1
          WHERE unit = coalesce(OLD.unit, '') AND reported = OLD.reported
            AND has_open = CASE WHEN OLD.open_findings > 0 THEN 1 ELSE 0 END;
      END IF;
      IF TG_OP <> 'DELETE' THEN
        INSERT INTO fleet_tallies (unit, reported, has_open, hosts)
          VALUES (coalesce(NEW.unit, ''), NEW.reported,
                  CASE WHEN NEW.open_findings > 0 THEN 1 ELSE 0 END, 1)
          ON CONFLICT (unit, reported, has_open) DO UPDATE
          SET hosts = fleet_tallies.hosts + 1;
      END IF;
      RETURN NULL;
    END $$""",
    """CREATE TRIGGER tally_placement AFTER INSERT OR DELETE
    OR UPDATE OF unit, reported, open_findings
    ON host_placements FOR EACH ROW EXECUTE FUNCTION tally_placement()""",
)
POSTGRES_DROP = (
    "DROP TRIGGER IF EXISTS tally_finding ON findings",
    "DROP TRIGGER IF EXISTS tally_host ON hosts",
    "DROP TRIGGER IF EXISTS tally_placement_fill ON host_placements",
    "DROP TRIGGER IF EXISTS tally_placement ON host_placements",
    "DROP FUNCTION IF EXISTS tally_finding()",
    "DROP FUNCTION IF EXISTS tally_host()",
    "DROP FUNCTION IF EXISTS tally_placement_fill()",
    "DROP FUNCTION IF EXISTS tally_placement()",
)

# What the triggers keep, counted from scratch: once here, on the rows already stored.
FILL = (
    f"""UPDATE host_placements SET
      reported = (SELECT count(*) FROM hosts WHERE hosts.host_id = host_placements.host_id
                  AND hosts.last_received_at IS NOT NULL),
      open_findings = (SELECT count(*) FROM findings
                       WHERE findings.host_id = host_placements.host_id AND {COUNTS})""",
    """INSERT INTO fleet_tallies (unit, reported, has_open, hosts)
    SELECT coalesce(unit, ''), reported, CASE WHEN open_findings > 0 THEN 1 ELSE 0 END,
           count(*)
    FROM host_placements
    GROUP BY coalesce(unit, ''), reported, CASE WHEN open_findings > 0 THEN 1 ELSE 0 END""",
)


def upgrade() -> None:
    # plain ADD COLUMN, never a batch copy (see 0009)
    op.add_column(
        "host_placements",
        sa.Column("reported", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "host_placements",
        sa.Column("open_findings", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "fleet_tallies",
        sa.Column("unit", sa.String(255), nullable=False),
        sa.Column("reported", sa.Integer(), nullable=False),
        sa.Column("has_open", sa.Integer(), nullable=False),
        sa.Column("hosts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("unit", "reported", "has_open", name="pk_fleet_tallies"),
    )
    op.create_index("ix_hosts_observed", "hosts", [sa.text(OBSERVED_SQL), "host_id"])
    op.create_index("ix_host_placements_unit_host_id", "host_placements", ["unit", "host_id"])
    op.create_index(
        "ix_host_placements_reported_host_id", "host_placements", ["reported", "host_id"]
    )
    op.create_index("ix_findings_severity_id", "findings", ["severity", "id"])
    op.create_index("ix_findings_rule_id", "findings", ["rule", "id"])
    op.create_index("ix_reports_host_id_id", "reports", ["host_id", "id"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in FILL:  # before the triggers, which would count the fill twice
        op.execute(statement)
    for statement in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_DROP if postgres else SQLITE_DROP:
        op.execute(statement)
    op.drop_index("ix_reports_host_id_id", "reports")
    op.drop_index("ix_findings_rule_id", "findings")
    op.drop_index("ix_findings_severity_id", "findings")
    op.drop_index("ix_host_placements_reported_host_id", "host_placements")
    op.drop_index("ix_host_placements_unit_host_id", "host_placements")
    op.drop_index("ix_hosts_observed", "hosts")
    op.drop_table("fleet_tallies")
    with op.batch_alter_table("host_placements") as batch:
        batch.drop_column("open_findings")
        batch.drop_column("reported")
