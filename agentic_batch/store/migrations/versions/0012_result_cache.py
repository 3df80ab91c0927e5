"""The result cache: jobs.cache, units.fingerprint and units.cached_from.

`fingerprint` hashes what a unit's answer depends on (set for the units of `--cache` jobs);
`ix_units_fingerprint` serves the lookup across jobs. `cached_from` is the id of the unit that ran
and whose result a cached unit copied.

Revision ID: 0012
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("cache", sa.Boolean))
    with op.batch_alter_table("units") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64)))
        batch.add_column(sa.Column("cached_from", sa.Integer))
    op.create_index("ix_units_fingerprint", "units", ["fingerprint", "status"])
    op.create_index("ix_units_job_cached", "units", ["job_id", "cached_from"])


def downgrade() -> None:
    op.drop_index("ix_units_job_cached", table_name="units")
    op.drop_index("ix_units_fingerprint", table_name="units")
    with op.batch_alter_table("units") as batch:
        batch.drop_column("cached_from")
        batch.drop_column("fingerprint")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cache")
