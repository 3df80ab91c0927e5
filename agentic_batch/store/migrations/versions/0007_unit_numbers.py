"""Units get a per-job number 1..N: the one every interface shows and accepts (`abp show 2 1`).

Unit ids are global across jobs and `seq` has gaps (duplicate keys, `abp sync`), so neither can be
what a user types. Existing units are numbered in their claim order (seq, then id), one job at a
time in keyset batches, which works on every SQLite and PostgreSQL version alike. A unique
(job_id, number) index serves lookups by number and keeps two units from sharing one.

The column is added NOT NULL with a default of 0 (SQLite cannot make an existing column NOT NULL
without rebuilding the table, which would drop the expression index on duration); every unit is
numbered before the unique index is built, and `insert_units` always sets the number.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    op.add_column("units", sa.Column("number", sa.Integer, nullable=False, server_default="0"))
    conn = op.get_bind()
    units = sa.table("units", sa.column("id", sa.Integer), sa.column("job_id", sa.Integer),
                     sa.column("seq", sa.Integer), sa.column("number", sa.Integer))
    job_ids = [row[0] for row in conn.execute(sa.select(units.c.job_id).distinct())]
    update = sa.update(units).where(units.c.id == sa.bindparam("b_id")).values(number=sa.bindparam("b_number"))
    for job_id in job_ids:
        ids = [row[0] for row in conn.execute(
            sa.select(units.c.id).where(units.c.job_id == job_id).order_by(units.c.seq, units.c.id))]
        for start in range(0, len(ids), BATCH):
            conn.execute(update, [{"b_id": uid, "b_number": start + i + 1}
                                  for i, uid in enumerate(ids[start:start + BATCH])])
    op.create_index("ux_units_job_number", "units", ["job_id", "number"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_units_job_number", table_name="units")
    with op.batch_alter_table("units") as batch:
        batch.drop_column("number")
