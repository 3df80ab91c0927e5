"""Tools that steer a job running in its detached executor: stop_job, resume_job, resume_all_jobs, cancel_job,
retry_failed."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.mcp_server.replies import respond
from agentic_batch.mcp_server.schemas import JobRef
from agentic_batch.mcp_server.shaping import status_view
from agentic_batch.mcp_server.outputs import JobStatusReply
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.refs import MAX_ID
from agentic_batch.service import Orchestrator
from agentic_batch.service.models import JobView, ResumeAllReport


def _with_message(status: JobView, message: str) -> dict[str, Any]:
    view = status_view(status)
    view["message"] = message
    return view


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def stop_job(job_id: JobRef) -> Annotated[CallToolResult, JobStatusReply]:
        """Pause a RUNNING job: no new units start, units in flight finish (within a grace period), the rest
        wait as PENDING. The job becomes PAUSED shortly after (it may still read RUNNING right after this
        call). Nothing is lost; resume_job continues. Returns the job status."""
        def call() -> dict[str, Any]:
            s = orch.stop(job_id)
            return _with_message(s, f"Job {s.id} is stopping: in-flight units finish, then it is PAUSED.")

        return await respond(call)

    async def resume_job(job_id: JobRef) -> Annotated[CallToolResult, JobStatusReply]:
        """Continue a PAUSED job (or a RUNNING one whose executor died): units lost by a dead executor are
        reclaimed at once and a detached executor starts again. Returns the job status."""
        def call() -> dict[str, Any]:
            s = orch.resume(job_id)
            return _with_message(s, f"Job {s.id} resumed: {s.pending + s.running} unit(s) to go.")

        return await respond(call)

    async def cancel_job(job_id: JobRef) -> Annotated[CallToolResult, JobStatusReply]:
        """Cancel a job for good: running agents are killed and pending units become CANCELLED. Completed
        results stay available. Cannot be undone (retry_failed with include_cancelled=true can re-run the
        cancelled units later). Ask the user before cancelling. Returns the job status."""
        def call() -> dict[str, Any]:
            s = orch.cancel(job_id)
            return _with_message(s, f"Job {s.id} cancelled; {s.completed} unit(s) had completed.")

        return await respond(call)

    async def retry_failed(
        job_id: JobRef,
        include_cancelled: Annotated[bool, Field(description="Also re-run CANCELLED units.")] = False,
        error_group: Annotated[int | None, Field(ge=1, le=MAX_ID, description="Only the failed units of this "
                                                 "error group (`group` in get_error_summary).")] = None,
    ) -> Annotated[CallToolResult, JobStatusReply]:
        """Queue the FAILED units of a job again (fresh retries) and start the detached executor. Use after
        fixing the cause (get_error_summary groups the failures by cause; retry one group with error_group).
        Returns the job status."""
        def call() -> dict[str, Any]:
            s = orch.retry(job_id, include_cancelled=include_cancelled, error_group=error_group)
            return _with_message(s, f"Job {s.id} is running again: {s.pending} unit(s) queued.")

        return await respond(call)

    async def resume_all_jobs() -> Annotated[CallToolResult, ResumeAllReport]:
        """After a reboot or a crash: resume every RUNNING job whose executor is gone. Each RUNNING job is
        reported as resumed (a new detached executor, its pid), running (its executor was alive) or skipped
        (with the reason). Jobs in other states are left alone."""
        return await respond(orch.resume_all)

    add_tool(server, stop_job, title="Pause a running job", idempotent=True)
    add_tool(server, resume_job, title="Resume a paused job", idempotent=True)
    add_tool(server, resume_all_jobs, title="Resume every interrupted job", idempotent=True)
    add_tool(server, cancel_job, title="Cancel a job", destructive=True)
    add_tool(server, retry_failed, title="Retry failed units")
