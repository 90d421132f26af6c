"""Rate limits shared by every collector process: a report bucket per host, other buckets.

Revision ID: 0013
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN, never a batch copy of hosts (see 0009)
    op.add_column("hosts", sa.Column("report_tokens", sa.Float(), nullable=True))
    op.add_column("hosts", sa.Column("report_tokens_at", sa.Float(), nullable=True))
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_buckets"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("report_tokens_at")
        batch.drop_column("report_tokens")
