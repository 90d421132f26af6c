"""Notifications: the sender's cursor in the event log, deliveries, and events per target.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_cursor",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notification_cursor")),
    )
    op.create_table(
        "deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_deliveries_target_state", "deliveries", ["target", "state"])
    op.create_table(
        "delivery_events",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(255), nullable=True),
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("item", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("event_id", "target", name=op.f("pk_delivery_events")),
    )
    op.create_index("ix_delivery_events_delivery_id", "delivery_events", ["delivery_id"])
    # Notifications start now: what the log held before they existed is not sent.
    op.execute(
        "INSERT INTO notification_cursor (name, event_id) "
        "SELECT 'sender', COALESCE(MAX(id), 0) FROM events"
    )


def downgrade() -> None:
    op.drop_table("delivery_events")
    op.drop_table("deliveries")
    op.drop_table("notification_cursor")
