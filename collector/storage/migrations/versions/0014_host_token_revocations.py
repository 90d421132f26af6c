"""An index on host_tokens.revoked_at: each collector process asks every second or so for the
host tokens revoked lately, to drop them from its token cache.

Revision ID: 0014
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_host_tokens_revoked_at", "host_tokens", ["revoked_at"])


def downgrade() -> None:
    op.drop_index("ix_host_tokens_revoked_at", table_name="host_tokens")
