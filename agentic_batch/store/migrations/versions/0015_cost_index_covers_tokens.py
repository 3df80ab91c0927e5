"""The cost index covers the job's token sums: (job_id, cost_usd, id, tokens_in, tokens_out).

`abp status`, `abp list` and every job view sum a job's cost and tokens (`unit_totals`). The sums
looked up every unit's row (24 ms of CPU at 100,000 units); with the tokens in the cost index they
read that index alone (11 ms). Widening an index the units already have, rather than adding one,
keeps the insert cost of `abp create` (a new index on the same columns plus status added ~12% to
SQLite's insert of 100,000 units; docs/benchmarks.md, issue 16).

Revision ID: 0015
Revises: 0012
"""

from alembic import op

revision = "0015"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_units_job_cost", table_name="units")
    op.create_index("ix_units_job_cost", "units", ["job_id", "cost_usd", "id", "tokens_in", "tokens_out"])


def downgrade() -> None:
    op.drop_index("ix_units_job_cost", table_name="units")
    op.create_index("ix_units_job_cost", "units", ["job_id", "cost_usd", "id"])
