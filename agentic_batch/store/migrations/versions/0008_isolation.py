"""Isolated jobs (`--isolate worktree`): the job's isolation options, repository and base commit;
each unit's latest changes (stats), patch and verify output.

All columns are nullable: a job made before isolation existed reads as not isolated.

Revision ID: 0008
Revises: 0007
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_Columns = tuple[tuple[str, sa.types.TypeEngine[Any]], ...]
_JOB_COLUMNS: _Columns = (("isolate", sa.String(16)), ("base", sa.Text()), ("verify", sa.Text()),
                ("require_changes", sa.Boolean()), ("keep_worktrees", sa.Boolean()), ("repo", sa.Text()),
                ("base_commit", sa.String(64)))
_UNIT_COLUMNS: _Columns = (("changes", sa.JSON()), ("patch", sa.Text()), ("verify_output", sa.Text()))


def upgrade() -> None:
    for name, type_ in _JOB_COLUMNS:
        op.add_column("jobs", sa.Column(name, type_))
    for name, type_ in _UNIT_COLUMNS:
        op.add_column("units", sa.Column(name, type_))


def downgrade() -> None:
    with op.batch_alter_table("units") as batch:
        for name, _ in reversed(_UNIT_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        for name, _ in reversed(_JOB_COLUMNS):
            batch.drop_column(name)
