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
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("inline", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("hosts") as batch:
        batch.alter_column("inline", server_default=None)
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("through", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("inline")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("last_received_at")
        batch.drop_column("through")
