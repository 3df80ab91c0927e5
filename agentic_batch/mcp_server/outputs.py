"""What each tool's structured result holds, declared as the tool's `outputSchema`.

A tool returns its result as text (what a model reads) and as `structuredContent`, shaped for a
model's context by shaping.py and kept under the result budget by budget.py. These models declare
those shapes, so a client sees the fields (and the job and unit status enums) in `tools/list`,
and the SDK checks every result against them before it leaves.

Why these and not the service's read models: a reply is a view of them (empty values left out,
long text cut, a summary and the next step added), and the budget may cut strings or rows and say
so in a note. So every field is optional (a field without a value is left out) and a field the
budget adds (`truncated_to_fit`, `note`) is allowed; the types and enums still hold.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.service.models import BatchesView, JobSummary, ReduceView, RunPlan, UnitSource
from agentic_batch.states import JobStatus, UnitStatus


def _compact(schema: dict[str, Any]) -> None:
    """Every client lists every tool's schema, often into a model's context: no per-field titles
    (the field's name says it), no `default: null` (every field here may be left out), and
    `"type": ["integer", "null"]` rather than an `anyOf` of two objects."""
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if prop.get("default", 0) is None:
            del prop["default"]
        arms = prop.get("anyOf", [])
        if arms and all(set(arm) == {"type"} and isinstance(arm["type"], str) for arm in arms):
            prop["type"] = [arm["type"] for arm in arms]
            del prop["anyOf"]


COMPACT = ConfigDict(extra="allow", json_schema_extra=_compact)


class Reply(BaseModel):
    model_config = COMPACT

    note: str | None = Field(default=None, description="Something about this result: what was cut, and where "
                                                        "the rest is.")
    truncated_to_fit: str | bool | None = Field(default=None, description="Long values were cut to keep the "
                                                                          "result under the size budget.")


class ExecutorBrief(BaseModel):
    model_config = COMPACT
    state: str | None = Field(default=None, description="running, stopped, lost or not_started.")
    pid: int | None = None


class JobStatusReply(Reply):
    """A job's status for a model: a summary line, the counts, cost, and what to do next."""

    summary: str | None = Field(default=None, description="One line to relay to the user.")
    id: int | None = None
    name: str | None = None
    status: JobStatus | None = None
    total: int | None = None
    pending: int | None = None
    running: int | None = None
    completed: int | None = None
    failed: int | None = None
    cancelled: int | None = None
    cached: int | None = Field(default=None, description="Completed units whose result came from the result cache.")
    progress: float | None = Field(default=None, description="Percent of the units done.")
    eta_seconds: float | None = None
    cost_usd: float | None = None
    projected_cost_usd: float | None = None
    budget_usd: float | None = None
    error: str | None = None
    pause_reason: str | None = None
    hold_until: float | None = None
    reduce: ReduceView | None = None
    batches: BatchesView | None = Field(default=None, description="batch_api jobs: provider batches in flight "
                                                                  "(their units count as running).")
    executor: ExecutorBrief | None = None
    plan: RunPlan | None = Field(default=None, description="A job started with the result cache on: units it "
                                                           "completed, units left to run, their projected cost.")
    message: str | None = Field(default=None, description="What the call did.")
    next_step: str | None = Field(default=None, description="What to call next.")


class JobsReply(Reply):
    jobs: list[JobSummary] | None = None
    returned: int | None = None
    offset: int | None = None
    next_offset: int | None = Field(default=None, description="Offset of the next page; null on the last one.")


class ResultsReply(Reply):
    """One page of result rows: unit number, key, status, output, data.<field>, error, cost, tokens."""

    job_id: int | None = None
    job_status: JobStatus | None = None
    total: int | None = Field(default=None, description="Rows matching the filter in all.")
    offset: int | None = None
    returned: int | None = None
    next_offset: int | None = Field(default=None, description="Offset of the next page; null on the last one.")
    status_of_every_row: UnitStatus | None = Field(default=None, description="Set when every row has this "
                                                                             "status (the rows then omit it).")
    rows: list[dict[str, Any]] | None = None


class ConversationSummary(BaseModel):
    model_config = COMPACT

    events: int | None = None
    by_kind: dict[str, int] | None = None
    omitted: int | None = None
    lines: list[dict[str, Any]] | None = Field(default=None, description="One short line per event (attempt, "
                                                                           "kind, text).")


class UnitReply(Reply):
    """One unit: the item, its prompt and output (cut to max_chars), error, cost and a conversation summary."""

    job_id: int | None = None
    number: int | None = None
    key: str | None = None
    status: UnitStatus | None = None
    attempts: int | None = None
    errors: int | None = None
    error: str | None = None
    error_class: str | None = None
    exit_code: int | None = Field(default=None, description="A command unit's exit code.")
    cost_usd: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    turns: int | None = None
    duration_s: float | None = None
    session_id: str | None = None
    cached_from: UnitSource | None = Field(default=None, description="The unit a cached result came from.")
    payload: Any = None
    prompt: str | None = None
    output: str | None = None
    stderr: str | None = Field(default=None, description="A command unit's stderr (its stdout is `output`).")
    data: Any = None
    conversation: ConversationSummary | None = None
    truncated: dict[str, int] | None = Field(default=None, description="Fields that were cut, and their "
                                                                       "full length.")


class CreatedReply(Reply):
    job_id: int | None = None
    name: str | None = None
    status: JobStatus | None = None
    units: int | None = None
    source: str | None = None
    worker: str | None = None
    prompt_template: str | None = None
    preview_prompts: list[str] | None = Field(default=None, description="The prompt rendered for the first "
                                                                        "items.")
    duplicates_skipped: int | None = None
    prompt_synthesized: bool | None = None
    next_step: str | None = None


class StartReply(JobStatusReply):
    """start_job: the job's status (approved, rejected, started), or the test run: its unit and
    whether it passed, still running, or lost."""

    job_id: int | None = None
    job_status: JobStatus | None = None
    test_passed: bool | None = None
    test_unit: UnitReply | int | None = Field(default=None, description="The test unit (its number while "
                                                                       "the test runs).")
    remaining_units: int | None = None
    estimated_total_cost_usd: float | None = None
    test_running: bool | None = None
    elapsed_s: float | None = None
