"""units.review, units.reviewed_commit: a reviewer's mark on an isolated unit's changes.

`review` is `accepted` or `rejected`; `reviewed_commit` is the commit the mark was given to, so a
unit that ran again (a new commit) reads as not reviewed rather than carrying a stale verdict.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.add_column(sa.Column("review", sa.String(16)))
        batch.add_column(sa.Column("reviewed_commit", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.drop_column("reviewed_commit")
        batch.drop_column("review")
