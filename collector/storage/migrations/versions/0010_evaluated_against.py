"""What each host was last evaluated against, so that a policy change evaluates only the
hosts it changes.

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN, never a batch copy of hosts (see 0009); hosts evaluated before it
    # start with none, and are evaluated once more by the first housekeeping round
    op.add_column("hosts", sa.Column("baseline_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("baseline_digest")
