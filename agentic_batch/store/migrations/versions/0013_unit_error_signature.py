"""units.error_signature: the error with what varies between units masked, indexed with job and status
(and the error class and kind: a covering index), so failed units group by cause (`abp errors`) in one
indexed GROUP BY. Failed units that exist already get theirs computed here.

Revision ID: 0013
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

from agentic_batch.error_signature import error_signature

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    op.add_column("units", sa.Column("error_signature", sa.String(255)))
    units = sa.table("units", sa.column("id", sa.Integer), sa.column("status", sa.String),
                     sa.column("error", sa.Text), sa.column("error_signature", sa.String))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(sa.select(units.c.id, units.c.error)
                            .where(units.c.status == "FAILED", units.c.error.is_not(None), units.c.id > last)
                            .order_by(units.c.id).limit(_BATCH)).all()
        if not rows:
            break
        conn.execute(sa.update(units).where(units.c.id == sa.bindparam("b_id"))
                     .values(error_signature=sa.bindparam("b_sig")),
                     [{"b_id": r.id, "b_sig": error_signature(r.error)} for r in rows])
        last = rows[-1].id
    op.create_index("ix_units_job_error", "units", ["job_id", "status", "error_signature", "error_class", "error_kind"])


def downgrade() -> None:
    op.drop_index("ix_units_job_error", table_name="units")
    with op.batch_alter_table("units") as batch:
        batch.drop_column("error_signature")
