"""Indexes for browsing a job's units by cost and by duration (the dashboard's sortable table).

Both end in `id`, so ORDER BY key, id (either direction) with LIMIT/OFFSET walks the index instead of
sorting a 100,000-unit job on every page. Duration is an expression index: unfinished units count as
-1, which puts them first ascending and last descending on SQLite and PostgreSQL alike.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_units_job_cost", "units", ["job_id", "cost_usd", "id"])
    op.create_index("ix_units_job_duration", "units",
                    ["job_id", sa.text("coalesce(finished_at - started_at, -1.0)"), "id"])


def downgrade() -> None:
    op.drop_index("ix_units_job_duration", table_name="units")
    op.drop_index("ix_units_job_cost", table_name="units")
