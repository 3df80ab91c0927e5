"""Initial schema: jobs, units, events, executors, logs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.JSON, nullable=False),
        sa.Column("prompt_template", sa.Text),
        sa.Column("intent", sa.Text),
        sa.Column("worker", sa.String(32), nullable=False),
        sa.Column("worker_options", sa.JSON, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="1"),
        sa.Column("budget_usd", sa.Float),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("reduce_prompt", sa.Text),
        sa.Column("reduce_status", sa.String(16)),
        sa.Column("reduce_output", sa.Text),
        sa.Column("reduce_error", sa.Text),
        sa.Column("workdir", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("pause_reason", sa.String(32)),
        sa.Column("control", sa.String(16)),
        sa.Column("hold_until", sa.Float),
        sa.Column("test_unit_id", sa.Integer),
        sa.Column("creator_pid", sa.Integer),
        sa.Column("creator_host", sa.String(255)),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])

    op.create_table(
        "units",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("prompt", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("not_before", sa.Float),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("output", sa.Text),
        sa.Column("data", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("error_class", sa.String(16)),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
        sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
        sa.Column("session_id", sa.String(128)),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("job_id", "key", name="uq_units_job_key"),
    )
    op.create_index("ix_units_claim", "units", ["job_id", "status", "priority", "seq"])
    op.create_index("ix_units_job_seq", "units", ["job_id", "seq"])
    op.create_index("ix_units_job_finished", "units", ["job_id", "finished_at"])
    op.create_index("ix_units_lease_owner", "units", ["lease_owner"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("unit_id", sa.Integer),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_unit", "events", ["unit_id", "id"])
    op.create_index("ix_events_job", "events", ["job_id", "id"])

    op.create_table(
        "executors",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_start", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("stopped_at", sa.Float),
    )
    op.create_index("ix_executors_job", "executors", ["job_id", "started_at"])

    op.create_table(
        "logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("unit_id", sa.Integer),
        sa.Column("executor_id", sa.String(64)),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("extra", sa.JSON),
    )
    op.create_index("ix_logs_job", "logs", ["job_id", "id"])


def downgrade() -> None:
    for table in ("logs", "executors", "events", "units", "jobs"):
        op.drop_table(table)
