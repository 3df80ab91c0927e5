"""Four unit indexes hold only the units they serve: those with a lease owner, a finish time, a
fingerprint, a cached origin. A created unit has none of these, so a 100,000-unit create no longer
writes 400,000 index entries nobody reads (a third of SQLite's insert time), and the indexes stay
the size of the work done rather than of the job.

Every query these indexes serve already implies its predicate (`lease_owner = ?`, `finished_at >= ?`,
`fingerprint IN (...)`, `cached_from IS NOT NULL` or a join on it), so the plans are unchanged
(tests/integration/test_query_plans.py).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: (index, columns, the column an entry needs).
_PARTIAL = (
    ("ix_units_lease_owner", ["lease_owner"], "lease_owner"),
    ("ix_units_job_finished", ["job_id", "finished_at"], "finished_at"),
    ("ix_units_fingerprint", ["fingerprint", "status"], "fingerprint"),
    ("ix_units_job_cached", ["job_id", "cached_from"], "cached_from"),
)


def upgrade() -> None:
    for name, columns, needed in _PARTIAL:
        where = sa.text(f"{needed} IS NOT NULL")
        op.drop_index(name, table_name="units")
        op.create_index(name, "units", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, columns, _ in _PARTIAL:
        op.drop_index(name, table_name="units")
        op.create_index(name, "units", columns)
