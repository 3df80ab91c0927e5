"""units.exit_code, units.stdout, units.stderr: what a command unit's latest attempt exited with and
printed, kept apart (the unit's `output` stays what it was: stdout, or the worker's answer).

NULL for units of other workers and for units that ran before these columns existed.

Revision ID: 0014
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.add_column(sa.Column("exit_code", sa.Integer))
        batch.add_column(sa.Column("stdout", sa.Text))
        batch.add_column(sa.Column("stderr", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.drop_column("stderr")
        batch.drop_column("stdout")
        batch.drop_column("exit_code")
