"""Indexes behind the orders of paged lists and of /metrics' newest report.

``GET /api/v1/vulnerabilities?cve=`` pages one vulnerability's hosts in the listing's order
(host, source package): ``(vuln, host_id, source)`` gives them in that order from any cursor,
where the index on ``vuln`` alone had them sorted after reading all. It serves every lookup
the old one did, which goes.

``fleetwatch_last_report_received_timestamp_seconds`` is the newest ``last_received_at``: one
step down an index, not a pass over every host at each scrape.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_host_vulnerabilities_vuln_host_id_source",
        "host_vulnerabilities",
        ["vuln", "host_id", "source"],
    )
    op.drop_index("ix_host_vulnerabilities_vuln", table_name="host_vulnerabilities")
    op.create_index("ix_hosts_last_received_at", "hosts", ["last_received_at"])


def downgrade() -> None:
    op.drop_index("ix_hosts_last_received_at", table_name="hosts")
    op.create_index("ix_host_vulnerabilities_vuln", "host_vulnerabilities", ["vuln"])
    op.drop_index(
        "ix_host_vulnerabilities_vuln_host_id_source", table_name="host_vulnerabilities"
    )
