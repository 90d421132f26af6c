"""Reports that change nothing extend the row before them; volatile sections kept inline.

Revision ID: 0009
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN, never a batch copy of hosts: on SQLite (foreign keys on) dropping the
    # old hosts table would cascade to every host's tokens, reports and findings
    op.add_column("hosts", sa.Column("inline", sa.JSON(), nullable=False, server_default="{}"))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("hosts", "inline", server_default=None)
    op.add_column("reports", sa.Column("through", sa.BigInteger(), nullable=True))
    op.add_column(
        "reports", sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("inline")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("last_received_at")
        batch.drop_column("through")
