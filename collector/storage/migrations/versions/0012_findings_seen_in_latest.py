"""A finding's ``last_seen`` follows its host's latest report instead of being rewritten by each.

Revision ID: 0012
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # until now every evaluation moved last_seen: an open finding was seen in the latest one
    op.add_column(
        "findings",
        sa.Column("seen_in_latest", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("seen_in_latest")
