"""Resources: `abp://jobs` (the job list) and `abp://jobs/{job_id}` (one job's status), as JSON.

Clients that attach resources to a conversation (Claude Desktop's "+" menu) get the same data the
list_jobs and get_job_status tools return, without a tool call.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from agentic_batch.errors import AbpError, NotFound
from agentic_batch.mcp_server.replies import in_thread, to_json
from agentic_batch.mcp_server.shaping import status_view
from agentic_batch.service import Orchestrator

JOBS_LISTED = 100


async def _read(fn: Any, *args: Any) -> str:
    """Run the service call in a thread; user errors become resource errors with the CLI's one line."""
    try:
        return to_json(await in_thread(fn, *args))
    except NotFound as exc:
        raise ResourceNotFoundError(exc.one_line()) from None
    except AbpError as exc:
        raise ResourceError(exc.one_line()) from None


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    @server.resource("abp://jobs", name="jobs", title="abp jobs", mime_type="application/json",
                     description=f"The newest {JOBS_LISTED} batch jobs: id, name, status, unit counts, progress, "
                                 "cost.")
    async def jobs() -> str:
        return await _read(lambda: {"jobs": orch.list_jobs(limit=JOBS_LISTED)})

    @server.resource("abp://jobs/{job_id}", name="job", title="abp job status", mime_type="application/json",
                     description="One job's status: counts, progress, rate, ETA, cost, executor, next step.")
    async def job(job_id: str) -> str:
        return await _read(lambda: status_view(orch.status(job_id)))
