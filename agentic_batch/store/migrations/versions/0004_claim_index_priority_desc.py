"""The claim index in claim order: (job_id, status, priority DESC, seq).

The claim picks `ORDER BY priority DESC, seq`; with priority ascending in the index SQLite sorted
every pending unit on every claim (48 ms per claim at 100,000 pending units, 0.03 ms with this one).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_units_claim", table_name="units")
    op.create_index("ix_units_claim", "units", ["job_id", "status", sa.text("priority DESC"), "seq"])


def downgrade() -> None:
    op.drop_index("ix_units_claim", table_name="units")
    op.create_index("ix_units_claim", "units", ["job_id", "status", "priority", "seq"])
