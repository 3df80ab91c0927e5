"""Tools that change what a job holds: add_units (items added to a job that exists) and delete_job.

The same service calls as `abp add` and `abp delete`. Items come inline only up to a cap (a model's
context is not a data channel: more items go in a file whose path the tool reads)."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.mcp_server.replies import respond
from agentic_batch.mcp_server.schemas import JobRef
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.service import Orchestrator
from agentic_batch.service.adding import MAX_INLINE_ITEMS, file_items, inline_items
from agentic_batch.service.models import AddedUnits
from agentic_batch.service.clearing_models import DeletedJobs


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def add_units(
        job_id: JobRef,
        items: Annotated[list[dict[str, Any]] | None, Field(
            max_length=MAX_INLINE_ITEMS,
            description=f"The items, each an object of fields like the job's source items (at most "
                        f"{MAX_INLINE_ITEMS}; more: write them to a file and give `path`).")] = None,
        path: Annotated[str | None, Field(
            description="Absolute path of a JSON Lines file (one object per line) or a JSON file holding an "
                        "array of objects.")] = None,
        start: Annotated[bool, Field(description="Run a COMPLETED, PAUSED or FAILED job again at once for the new "
                                                 "units. Only when the user asked for it.")] = False,
    ) -> Annotated[CallToolResult, AddedUnits]:
        """Add items to a job that exists; each becomes a unit. Keys deduplicate as for the job's source (an
        item whose key the job has is skipped), and every item is checked against the job's prompt first: a
        bad item is an error naming it, and nothing is added. A RUNNING job picks the new units up at once;
        a COMPLETED job becomes PAUSED with them pending unless `start`. Give `items` or `path`, not both.
        Returns how many were added and how many skipped as duplicates."""
        def call() -> AddedUnits:
            if (items is None) == (path is None):
                raise InvalidSpec(f"give {field_ref('items')} or {field_ref('path')} (one of them)")
            given = inline_items(items) if items is not None else file_items(path or "")
            return orch.add(job_id, given, start=start)

        return await respond(call)

    async def delete_job(
        job_id: JobRef,
        force: Annotated[bool, Field(description="Cancel a RUNNING job first (its executors stop), then delete "
                                                 "it. Only when the user asked for it.")] = False,
    ) -> Annotated[CallToolResult, DeletedJobs]:
        """Delete a job for good: its units, results, events, logs, its files under ABP_HOME and, for an
        isolated job, its worktrees and unit branches (the applied branch stays). Refused for a RUNNING job
        unless `force`. Cannot be undone: export the results first if they are wanted, and ask the user
        before deleting."""
        return await respond(lambda: orch.delete([job_id], force=force))

    add_tool(server, add_units, title="Add items to a job")
    add_tool(server, delete_job, title="Delete a job", destructive=True)
