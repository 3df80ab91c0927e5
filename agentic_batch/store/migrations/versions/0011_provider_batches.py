"""Provider batches (`--batch-api`): the job's batch options and a `batches` table.

A `batches` row is written BEFORE a batch is uploaded (the intent: its tag, its units leased to
`batch:<id>`), and gets the provider's id right after the create call returns, so a crash between the
two is repaired by finding the batch by its tag at the provider (see engine/batch_loop.py).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_api", sa.Boolean))
        batch.add_column(sa.Column("batch_size", sa.Integer))
        batch.add_column(sa.Column("batch_poll_s", sa.Float))
        batch.add_column(sa.Column("batch_fallback", sa.String(16)))
        batch.add_column(sa.Column("batch_fallback_after_s", sa.Float))
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("provider_status", sa.String(32)),
        sa.Column("units", sa.Integer, nullable=False, server_default="0"),
        sa.Column("counts", sa.JSON),
        sa.Column("projected_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("submitted_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_batches_job_state", "batches", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_batches_job_state", "batches")
    op.drop_table("batches")
    with op.batch_alter_table("jobs") as batch:
        for name in ("batch_fallback_after_s", "batch_fallback", "batch_poll_s", "batch_size", "batch_api"):
            batch.drop_column(name)
