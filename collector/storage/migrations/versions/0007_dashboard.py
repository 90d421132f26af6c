"""The dashboard: browser sessions, hosts placed by the policy, fleet snapshots for trends.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("token_id", BigId, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(255), nullable=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name="fk_dashboard_sessions_token_id_api_tokens",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dashboard_sessions"),
        sa.UniqueConstraint("session_hash", name="uq_dashboard_sessions_session_hash"),
    )
    op.create_index("ix_dashboard_sessions_token_id", "dashboard_sessions", ["token_id"])
    op.create_table(
        "host_placements",
        sa.Column("host_id", sa.String(253), nullable=False),
        sa.Column("unit", sa.String(255), nullable=True),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("max_report_age", sa.Integer(), nullable=False),
        sa.Column("listed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_host_placements"),
    )
    op.create_index("ix_host_placements_unit", "host_placements", ["unit"])
    op.create_index(
        "ix_host_placements_max_report_age", "host_placements", ["max_report_age"]
    )
    op.create_table(
        "fleet_snapshots",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unit", sa.String(255), nullable=False),
        sa.Column("hosts", sa.Integer(), nullable=False),
        sa.Column("compliant", sa.Integer(), nullable=False),
        sa.Column("noncompliant", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Integer(), nullable=False),
        sa.Column("never_reported", sa.Integer(), nullable=False),
        sa.Column("open_critical", sa.Integer(), nullable=False),
        sa.Column("open_high", sa.Integer(), nullable=False),
        sa.Column("open_medium", sa.Integer(), nullable=False),
        sa.Column("open_low", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fleet_snapshots"),
    )
    op.create_index(
        "ix_fleet_snapshots_trends",
        "fleet_snapshots",
        [
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
        ],
    )


def downgrade() -> None:
    op.drop_table("fleet_snapshots")
    op.drop_table("host_placements")
    op.drop_table("dashboard_sessions")
