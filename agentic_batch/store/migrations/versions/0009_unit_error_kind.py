"""units.error_kind: what went wrong in the last failed attempt, as data (a worker's FailureKind).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.drop_column("error_kind")
