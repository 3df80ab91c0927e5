"""Tools that read: get_job_status, list_jobs, get_results (paged), get_unit, get_error_summary, export_results.

Results are paged and cut so a 100,000-unit job never floods the conversation; the full data goes to
a file through export_results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.mcp_server.replies import respond, to_json
from agentic_batch.refs import MAX_ID
from agentic_batch.mcp_server.schemas import ExportFormat, JobRef, MaxChars, StatusFilter, UnitRef
from agentic_batch.mcp_server.budget import fit_page, max_result_chars
from agentic_batch.mcp_server.shaping import hoist_status, result_row, status_view, unit_view
from agentic_batch.mcp_server.outputs import JobsReply, JobStatusReply, ResultsReply, UnitReply
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.service import Orchestrator
from agentic_batch.service.mcp_support import results_page
from agentic_batch.service.error_groups import MAX_EXAMPLES, MAX_GROUPS
from agentic_batch.service.models import ErrorSummary, ExportResult, plain
from agentic_batch.states import JobStatus

POLL_SECONDS = 0.5


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def get_job_status(
        job_id: JobRef,
        wait_seconds: Annotated[float, Field(ge=0, le=60, description="Wait up to this many seconds for a "
                                             "RUNNING job to finish before answering (returns as soon as it "
                                             "does). Saves polling turns.")] = 0,
    ) -> Annotated[CallToolResult, JobStatusReply]:
        """Progress of one job: status, unit counts (total, pending, running, completed, failed, cancelled),
        percent done, rate (units/s), ETA, elapsed time, cost and tokens so far, and the executor's state
        (running / stopped / lost / not_started, pid, last heartbeat). Includes a one-line summary to relay to the
        user and the next step. Poll it while a job is RUNNING (use wait_seconds rather than rapid calls).
        """
        def call() -> dict[str, Any]:
            status = orch.status(job_id)
            deadline = time.monotonic() + wait_seconds
            while status.status == JobStatus.RUNNING and time.monotonic() < deadline:
                time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))
                status = orch.status(status.id)
            return status_view(status)

        return await respond(call)

    async def list_jobs(
        status: Annotated[str | None, Field(description="Only jobs with this status: created, testing, running, "
                                            "paused, completed, failed, cancelled (comma-separate several).")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="How many jobs (newest first).")] = 20,
        offset: Annotated[int, Field(ge=0, le=MAX_ID, description="Skip this many jobs (paging).")] = 0,
    ) -> Annotated[CallToolResult, JobsReply]:
        """List jobs, newest first: id, name, status, worker, unit counts, progress and cost. Use it to find a
        job id the user refers to by name or time."""
        def call() -> dict[str, Any]:
            jobs = plain(orch.list_jobs(status=status, limit=limit, offset=offset))
            return fit_page({"jobs": jobs, "returned": len(jobs), "offset": offset,
                             "next_offset": offset + len(jobs) if len(jobs) == limit else None}, "jobs", offset)

        return await respond(call)

    async def get_results(
        job_id: JobRef,
        status: StatusFilter = None,
        offset: Annotated[int, Field(ge=0, le=MAX_ID, description="Skip this many rows (use next_offset from the "
                                                       "previous page).")] = 0,
        limit: Annotated[int, Field(ge=1, le=200, description="Rows per page.")] = 20,
        max_chars: MaxChars = 500,
        item_fields: Annotated[bool, Field(description="Also give each item's own fields (the source row) in "
                                                       "its result row.")] = False,
    ) -> Annotated[CallToolResult, ResultsReply]:
        """One page of a job's results, in item order: per unit its number (`unit`), key, the item's fields, status,
        output, error, cost, tokens and attempts (structured output fields appear as data.<field>).

        Long values are cut to max_chars and listed under `truncated`; get_unit or export_results give the
        full text. `total` counts all rows matching the filter; `next_offset` is null on the last page.
        For more than a few pages, prefer export_results to a file over paging through the conversation.
        """
        def call() -> dict[str, Any]:
            page = plain(results_page(orch, job_id, status=status, limit=limit, offset=offset))
            page["rows"] = [result_row(row, max_chars, item_fields) for row in page["rows"]]
            if any("truncated" in row for row in page["rows"]):
                page["note"] = ("Some values were cut (see each row's `truncated`); get_unit(job_id, unit, "
                                "max_chars=...) or export_results has the full text.")
            return fit_page(hoist_status(page), "rows", offset)

        return await respond(call)

    async def get_unit(job_id: JobRef, unit: UnitRef,
                       max_chars: MaxChars = 4000) -> Annotated[CallToolResult, UnitReply]:
        """One unit in detail: the item (payload), the rendered prompt, output, structured data, error and its
        class, attempts, cost, tokens, turns, and a summary of the agent's conversation (event counts by kind
        and one short line per event: tool calls, tool results, text, commands, errors), not the whole
        transcript. Use it to explain a failure or inspect an answer."""
        def call() -> dict[str, Any]:
            detail = orch.unit(job_id, unit)
            limit = max_chars
            view = unit_view(detail, limit)
            while len(to_json(view)) > max_result_chars() and limit > 200:  # fit: cut text fields more
                limit //= 2
                view = unit_view(detail, limit)
            return {"job_id": orch.job(job_id).id, **view}

        return await respond(call)

    async def export_results(
        job_id: JobRef,
        path: Annotated[str, Field(description="File to write; an absolute path is best (a relative one "
                                               "resolves against the job's working directory).")],
        format: Annotated[ExportFormat | None, Field(description="json, jsonl or csv (default: from the file "
                                                                 "extension, else jsonl).")] = None,
        status: StatusFilter = None,
        overwrite: Annotated[bool, Field(description="Replace the file if it exists (only when the user "
                                                     "said so).")] = False,
    ) -> Annotated[CallToolResult, ExportResult]:
        """Write all of a job's results (one row per unit: unit number, key, item fields, status, output, error, cost,
        attempts) to a CSV, JSON or JSONL file, untruncated, and return the absolute path and row count.
        The rows do not pass through the conversation; tell the user where the file is. An existing file is
        refused unless overwrite=true."""
        def call() -> ExportResult:
            job = orch.job(job_id)
            target = Path(path).expanduser()
            if not target.is_absolute():
                target = Path(job.workdir) / target
            return orch.export_to(job.id, target.resolve(), fmt=format, status=status, overwrite=overwrite)

        return await respond(call)

    async def get_error_summary(
        job_id: JobRef,
        examples: Annotated[int, Field(ge=0, le=MAX_EXAMPLES, description="Example units per group.")] = 3,
        limit: Annotated[int, Field(ge=1, le=MAX_GROUPS, description="Groups to return, largest first.")] = 20,
    ) -> Annotated[CallToolResult, ErrorSummary]:
        """A job's FAILED units grouped by cause: per group its number, count, error class and kind, a
        signature (the error with numbers, paths, ids and quoted values masked), one full example error and
        example unit numbers. Read it before retrying: fix the cause, then retry_failed(error_group=N)
        re-runs just that group. get_unit explains one example in detail."""
        return await respond(lambda: orch.error_summary(job_id, examples=examples, limit=limit))

    add_tool(server, get_job_status, title="Job progress", read_only=True, idempotent=True)
    add_tool(server, list_jobs, title="List jobs", read_only=True, idempotent=True)
    add_tool(server, get_results, title="Results (paged)", read_only=True, idempotent=True)
    add_tool(server, get_unit, title="One unit in detail", read_only=True, idempotent=True)
    add_tool(server, get_error_summary, title="Failures grouped by cause", read_only=True, idempotent=True)
    add_tool(server, export_results, title="Export results to a file")
