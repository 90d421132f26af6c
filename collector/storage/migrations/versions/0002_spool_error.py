"""Keep what agents say about their spool: why a report could not be spooled.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("spool_error", sa.Text(), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("spool_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("spool_error")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("spool_error")
