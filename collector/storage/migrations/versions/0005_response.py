"""The response to findings: their lifecycle, waivers, and silent hosts announced once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)

# plain ADD COLUMN (no batch copy of the table on SQLite, which would lose the partial
# unique index on open findings): every new column is nullable or has a constant default
_FINDING_COLUMNS = (
    sa.Column("state", sa.String(16), nullable=False, server_default="open"),
    sa.Column("acknowledged_by", sa.String(255), nullable=True),
    sa.Column("acknowledged_at", _TIME, nullable=True),
    sa.Column("note", sa.Text(), nullable=True),
    sa.Column("due_at", _TIME, nullable=True),
    sa.Column("overdue_at", _TIME, nullable=True),
    sa.Column("waiver_id", sa.BigInteger(), nullable=True),
    sa.Column("clean_reports", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("verified_at", _TIME, nullable=True),
    sa.Column("reopened", sa.Integer(), nullable=False, server_default="0"),
)


def upgrade() -> None:
    for column in _FINDING_COLUMNS:
        op.add_column("findings", column)
    # findings resolved before the lifecycle existed are as good as verified: no case to follow
    op.execute(
        "UPDATE findings SET state = 'verified', verified_at = resolved_at "
        "WHERE resolved_at IS NOT NULL"
    )
    op.create_index("ix_findings_state_due_at", "findings", ["state", "due_at"])
    op.create_table(
        "waivers",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("pattern", sa.String(512), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.Column("expiring_announced_at", _TIME, nullable=True),
        sa.Column("expired_announced_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waivers")),
    )
    op.create_index("ix_waivers_expires_at", "waivers", ["expires_at"])
    op.create_index("ix_waivers_scope_target", "waivers", ["scope", "target"])
    op.create_table(
        "host_silences",
        sa.Column("host_id", sa.String(253), nullable=False),
        sa.Column("noticed_at", _TIME, nullable=False),
        sa.Column("condition", sa.String(16), nullable=False),
        sa.Column("announced_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_host_silences")),
    )


def downgrade() -> None:
    op.drop_table("host_silences")
    op.drop_table("waivers")
    op.drop_index("ix_findings_state_due_at", "findings")
    for column in reversed(_FINDING_COLUMNS):
        with op.batch_alter_table("findings") as batch:
            batch.drop_column(column.name)
