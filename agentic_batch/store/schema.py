"""The store's tables (SQLAlchemy Core). Alembic migrations create them; this module describes them.

Timestamps are float seconds since the epoch: the same arithmetic on SQLite and PostgreSQL, and
lease checks are plain comparisons. Counters shown to users are derived from unit statuses through
indexes, never kept by read-modify-write.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def _set(column: str) -> sa.TextClause:
    """A partial index's predicate: rows whose `column` is set."""
    return sa.text(f"{column} IS NOT NULL")

jobs = sa.Table(
    "jobs",
    metadata,
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
    # Why a PAUSED job paused: "stopped", "budget", "quota", "executor lost".
    sa.Column("pause_reason", sa.String(32)),
    # A request to every executor of the job ("stop" or "cancel"), polled once a second.
    sa.Column("control", sa.String(16)),
    # Quota pause: no unit is claimed before this time.
    sa.Column("hold_until", sa.Float),
    sa.Column("test_unit_id", sa.Integer),
    sa.Column("creator_pid", sa.Integer),
    sa.Column("creator_host", sa.String(255)),
    # JSON Schema the output of every unit must match (the engine asks for and validates JSON).
    sa.Column("output_schema", sa.JSON),
    # How long a quota pause lasts when the provider does not say when the quota resets.
    sa.Column("quota_wait_s", sa.Float),
    # The working clock (rate and elapsed exclude paused and idle time): seconds of every RUNNING
    # stretch that ended, and when the current one began (NULL unless RUNNING). Kept by update_job.
    sa.Column("active_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("running_since", sa.Float),
    # Bytes of a unit's output kept in the store (NULL: the default, for jobs made before the cap).
    sa.Column("max_output_bytes", sa.Integer),
    # Isolation (`--isolate worktree`): the options as given, and the repository and base commit
    # fixed at create time (NULL/false for jobs made before isolation existed: not isolated).
    sa.Column("isolate", sa.String(16)),
    sa.Column("base", sa.Text),
    sa.Column("verify", sa.Text),
    sa.Column("require_changes", sa.Boolean),
    sa.Column("keep_worktrees", sa.Boolean),
    sa.Column("repo", sa.Text),
    sa.Column("base_commit", sa.String(64)),
    # Provider batches (`--batch-api`): the options as given (NULL for jobs made before: not batched).
    sa.Column("batch_api", sa.Boolean),
    sa.Column("batch_size", sa.Integer),
    sa.Column("batch_poll_s", sa.Float),
    sa.Column("batch_fallback", sa.String(16)),
    sa.Column("batch_fallback_after_s", sa.Float),
    # The result cache (`--cache`): the job's units are completed from earlier units with the same fingerprint.
    sa.Column("cache", sa.Boolean),
    sa.Index("ix_jobs_status", "status"),
)

units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    # What users call the unit: 1..N within its job, dense, in source order (ids are global, and seq
    # has gaps where duplicate keys were skipped). Always set on insert (the default only serves the migration).
    sa.Column("number", sa.Integer, nullable=False, server_default="0"),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("prompt", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    # Runs started (numbering attempts in events); error_count decides retries.
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", sa.Float),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("output", sa.Text),
    sa.Column("data", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("error_class", sa.String(16)),
    sa.Column("error_kind", sa.String(32)),
    # The error with what varies between units masked (error_signature.py), set with the error: failed
    # units group by it (`abp errors`) without re-reading every error.
    sa.Column("error_signature", sa.String(255)),
    sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("tokens_in", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("turns", sa.Integer, nullable=False, server_default="0"),
    sa.Column("session_id", sa.String(128)),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    # An isolated job's latest attempt: what it changed (stats JSON, git patch) and its verify output.
    sa.Column("changes", sa.JSON),
    sa.Column("patch", sa.Text),
    sa.Column("verify_output", sa.Text),
    # A reviewer's mark on those changes (accepted/rejected) and the commit it was given to.
    sa.Column("review", sa.String(16)),
    sa.Column("reviewed_commit", sa.String(64)),
    # A command unit's latest attempt: its exit code (negative: killed by that signal), stdout and
    # stderr as captured (each within the job's output cap); NULL for other workers.
    sa.Column("exit_code", sa.Integer),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    # Result cache: what the unit's answer depends on, hashed (service/fingerprints.py; NULL unless its job
    # has --cache), and the unit that ran and whose result this one copied (NULL: it ran itself).
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("cached_from", sa.Integer),
    sa.UniqueConstraint("job_id", "key", name="uq_units_job_key"),
    sa.Index("ix_units_job_seq", "job_id", "seq"),
    sa.Index("ux_units_job_number", "job_id", "number", unique=True),
    # Partial (migration 0016): a unit enters these when it has the value they find it by, so a create
    # writes none of them; every query they serve implies the predicate.
    sa.Index("ix_units_job_finished", "job_id", "finished_at",
             sqlite_where=_set("finished_at"), postgresql_where=_set("finished_at")),
    sa.Index("ix_units_lease_owner", "lease_owner",
             sqlite_where=_set("lease_owner"), postgresql_where=_set("lease_owner")),
    # Units by cost (browse); with the tokens, a job's cost and token sums read this index alone
    # (`unit_totals`; the counts by status read ix_units_claim alone).
    sa.Index("ix_units_job_cost", "job_id", "cost_usd", "id", "tokens_in", "tokens_out"),
    sa.Index("ix_units_job_error", "job_id", "status", "error_signature", "error_class", "error_kind"),
    # Across jobs: the cache lookup of a fingerprint's completed units.
    sa.Index("ix_units_fingerprint", "fingerprint", "status",
             sqlite_where=_set("fingerprint"), postgresql_where=_set("fingerprint")),
    # A job's cached units, counted for its status.
    sa.Index("ix_units_job_cached", "job_id", "cached_from",
             sqlite_where=_set("cached_from"), postgresql_where=_set("cached_from")),
)

#: A unit's run time for sorting; -1 while unfinished (same NULL placement on every dialect).
UNIT_DURATION = sa.func.coalesce(units.c.finished_at - units.c.started_at, sa.literal_column("-1.0"))
sa.Index("ix_units_job_duration", units.c.job_id, UNIT_DURATION, units.c.id)
# In claim order (priority DESC, seq), so a claim reads the first pending units instead of sorting them all.
sa.Index("ix_units_claim", units.c.job_id, units.c.status, units.c.priority.desc(), units.c.seq)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("unit_id", sa.Integer),  # NULL for the job's reduce step
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_unit", "unit_id", "id"),
    sa.Index("ix_events_job", "job_id", "id"),
)

executors = sa.Table(
    "executors",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # /proc start time of the pid, so a recycled pid is not mistaken for a live executor.
    sa.Column("pid_start", sa.String(32)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("stopped_at", sa.Float),
    sa.Index("ix_executors_job", "job_id", "started_at"),
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("unit_id", sa.Integer),
    sa.Column("executor_id", sa.String(64)),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("extra", sa.JSON),
    sa.Index("ix_logs_job", "job_id", "id"),
)

#: Provider batches of `--batch-api` jobs. The row is written (state `intent`, with its `tag` and its
#: units leased to `batch:<id>`) before the upload; `provider_id` right after the create call. States:
#: intent, validating, in_progress, cancelling, ended (results not yet applied), failed, done.
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("tag", sa.String(64), nullable=False),
    sa.Column("provider_id", sa.String(128)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("provider_status", sa.String(32)),
    sa.Column("units", sa.Integer, nullable=False, server_default="0"),
    sa.Column("counts", sa.JSON),
    # What the batch is expected to cost at the batch price: the budget counts it before the next batch.
    sa.Column("projected_usd", sa.Float, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_batches_job_state", "job_id", "state"),
)
