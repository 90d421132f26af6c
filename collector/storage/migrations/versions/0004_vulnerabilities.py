"""Vulnerability data: imported data sets, and the vulnerabilities each host carries.

Revision ID: 0004
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vulnerability_datasets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_vulnerability_datasets")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # stored compressed: PostgreSQL trying again would only burn CPU
        op.execute("ALTER TABLE vulnerability_datasets ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "host_vulnerabilities",
        sa.Column("host_id", sa.String(length=253), nullable=False),
        sa.Column("vuln", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("release", sa.String(length=64), nullable=False),
        sa.Column("installed_version", sa.String(length=255), nullable=False),
        sa.Column("fixed_version", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("urgency", sa.String(length=64), nullable=True),
        sa.Column("cvss", sa.Float(), nullable=True),
        sa.Column("fixable", sa.Boolean(), nullable=False),
        sa.Column("exploited", sa.Boolean(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("advisories", sa.JSON(), nullable=False),
        sa.Column("binaries", sa.JSON(), nullable=False),
        sa.Column("fix_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.host_id"],
            name=op.f("fk_host_vulnerabilities_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_id", "vuln", "source", name=op.f("pk_host_vulnerabilities")),
    )
    op.create_index(
        op.f("ix_host_vulnerabilities_vuln"), "host_vulnerabilities", ["vuln"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_host_vulnerabilities_vuln"), table_name="host_vulnerabilities")
    op.drop_table("host_vulnerabilities")
    op.drop_table("vulnerability_datasets")
