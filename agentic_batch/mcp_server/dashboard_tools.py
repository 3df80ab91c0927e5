"""Tools that open and close the web dashboard for the user: open_dashboard, stop_dashboard.

The dashboard runs detached (service/dashboard.py): it keeps serving after this MCP server, and the
conversation, end. From MCP it always binds 127.0.0.1 (no host or token argument): a model cannot open
the API to a network; a dashboard the user started elsewhere with a token is reused as it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.mcp_server.replies import respond
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.service import Orchestrator, dashboard
from agentic_batch.service.models import DashboardInfo


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def open_dashboard(
        job_id: Annotated[int | str | None, Field(description="A job to show: its page's URL is returned as "
                                                              "job_url (a job id, a unique name, or \"last\").")]
        = None,
        port: Annotated[int | None, Field(ge=1024, le=65535, description="Port on 127.0.0.1 if a dashboard has to "
                                                                         "be started (default 3847; one already "
                                                                         "running is reused).")] = None,
    ) -> Annotated[CallToolResult, DashboardInfo]:
        """Open the web dashboard (live progress, units, conversations, logs, failures by cause) for the user:
        starts it in the background on 127.0.0.1 if it is not running, and returns its URL (and job_url, the
        page of job_id when given). Give the user the URL to open; the dashboard keeps running after this
        conversation ends (stop_dashboard stops it)."""
        def call() -> DashboardInfo:
            job = orch.job(job_id) if job_id is not None else None  # an unknown job: nothing is started
            info = dashboard.start(orch.settings, port=port)
            if job is not None and info.url:
                info.job_url = f"{info.url}jobs/{job.id}"
            return info

        return await respond(call)

    async def stop_dashboard() -> Annotated[CallToolResult, DashboardInfo]:
        """Stop the background web dashboard (started by open_dashboard or `abp serve --detach`). Jobs are not
        affected. Says so if none was running."""
        return await respond(lambda: dashboard.stop(orch.settings))

    add_tool(server, open_dashboard, title="Open the web dashboard", idempotent=True)
    add_tool(server, stop_dashboard, title="Stop the web dashboard", idempotent=True)
