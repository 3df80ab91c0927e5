"""A job's working clock: seconds spent RUNNING, so rate and elapsed leave paused and idle time out.

`active_seconds` accumulates every RUNNING stretch that ended; `running_since` is when the current
one began (NULL when the job is not RUNNING). Existing jobs get their best estimate: a RUNNING job's
stretch starts at started_at; a stopped job's clock is started_at to its end (finished_at, else its
last finished unit).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("active_seconds", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("running_since", sa.Float))
    op.execute("UPDATE jobs SET running_since = started_at WHERE status = 'RUNNING' AND started_at IS NOT NULL")
    op.execute(
        "UPDATE jobs SET active_seconds = COALESCE(finished_at, "
        "(SELECT MAX(units.finished_at) FROM units WHERE units.job_id = jobs.id), started_at) - started_at "
        "WHERE status <> 'RUNNING' AND started_at IS NOT NULL"
    )
    op.execute("UPDATE jobs SET active_seconds = 0 WHERE active_seconds < 0")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("running_since")
        batch.drop_column("active_seconds")
