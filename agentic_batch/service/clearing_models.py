"""What `delete` and `prune` answer (REST response models, MCP output schemas, the CLI's lines)."""

from __future__ import annotations

from pydantic import Field

from agentic_batch.service.models import ReadModel
from agentic_batch.states import JobStatus


class DeletedJob(ReadModel):
    """One job removed (or, for a dry run, that would be)."""

    job_id: int
    name: str
    status: JobStatus = Field(description="The job's status before it was deleted (CANCELLED when `force` "
                                          "cancelled it first).")
    units: int
    finished_at: float | None = Field(default=None, description="When the job ended (epoch seconds).")
    deleted: bool = Field(description="False for a dry run: nothing was removed.")
    cancelled: bool = Field(default=False, description="`force` cancelled the RUNNING job first.")
    rows: int = Field(default=0, description="Store rows deleted: units, events, logs, executors, the job.")
    branches_removed: int = Field(default=0, description="An isolated job's unit branches deleted.")
    kept: list[str] = Field(default_factory=list, description="Branches left in place: the applied branch (the "
                                                              "user's result), or ones checked out.")
    files_removed: bool = Field(default=False, description="The job's directory under ABP_HOME (worktrees, "
                                                           "workspaces, outputs, executor log) was removed.")
    warnings: list[str] = Field(default_factory=list, description="What could not be removed, and why.")


class DeletedJobs(ReadModel):
    jobs: list[DeletedJob]


class PrunedJobs(ReadModel):
    """The jobs `prune` matched: deleted, or (dry run) listed."""

    dry_run: bool
    statuses: list[JobStatus]
    older_than_s: float | None = Field(description="Only jobs that ended longer ago than this many seconds.")
    jobs: list[DeletedJob]
