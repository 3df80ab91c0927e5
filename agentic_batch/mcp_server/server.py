"""The MCP server: `build_server()` wires the tools and resources to one Orchestrator; `run()` serves it.

Over stdio (Claude Desktop, Claude Code) or streamable HTTP on 127.0.0.1 only: the tools can run
commands and write files as the user, so the server never listens beyond this machine.

The server holds no job state. Jobs run in detached executors that `start_job` launches in a session
of their own (see `engine.launch`), so closing the client, or killing this process, never stops one.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, Tool
from pydantic import ValidationError

from agentic_batch.errors import name_fields
from agentic_batch.mcp_server.replies import failure

from agentic_batch.mcp_server import (add_delete_tools, change_tools, control_tools, dashboard_tools, job_tools,
                                      read_tools, resources)
from agentic_batch.service import Orchestrator
from agentic_batch.spec import describe_validation_error

DEFAULT_HTTP_PORT = 8766
HTTP_HOST = "127.0.0.1"

INSTRUCTIONS = """\
abp (agentic-batch) runs a worker (a shell command, a Python function, Claude Code, or an API model) over
every item of a large workload, in parallel, in a detached background process that survives this
conversation, and never loses an item.

Use it when the user wants the same task done for many items (files, CSV/JSON/JSONL rows, SQL rows).
The items never pass through the conversation: give create_job a path, glob or query.

Protocol (test first):
1. create_job -> job id, unit count, the prompt and a preview of the first rendered prompts.
2. start_job(job_id) -> runs ONE unit now and returns its output and cost. Show it to the user and ask
   for approval; never approve on the user's behalf.
3. start_job(job_id, approve=true) -> starts the rest in the background and returns at once.
   (reject=true + edit_prompt + start_job to change the prompt and test again.)
4. get_job_status(job_id, wait_seconds=30) until COMPLETED (or FAILED: see get_results(status='failed'),
   retry_failed).
5. get_results (paged, truncated) for a look; export_results(path) for the full data in a file.
list_sources describes the source kinds and each worker kind's options.
"""


class AbpServer(MCPServer[Any]):
    """The SDK's server, refusing arguments a tool does not take.

    The SDK validates arguments with a Pydantic model that ignores unknown keys, so a misspelt
    `concurency=2` or an invented `bogus=1` would be dropped without a word and the job created
    with defaults. Here it is a tool error naming the argument, and every input schema says
    `additionalProperties: false`, so clients that validate catch it before the call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Tool name -> its argument names (filled by toolkit.add_tool).
        self.tool_arguments: dict[str, frozenset[str]] = {}

    async def list_tools(self) -> list[Tool]:
        tools = await super().list_tools()
        for tool in tools:
            if tool.name in self.tool_arguments:
                tool.input_schema = {**tool.input_schema, "additionalProperties": False}
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None) -> Any:
        known = self.tool_arguments.get(name)
        unknown = sorted(set(arguments) - known) if known is not None else []
        if unknown:
            return _unknown_arguments(name, unknown, known or frozenset())
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                # An argument outside its bounds (`concurrency=0`): the same one line the service gives
                # for the same field (REST's words), not the SDK's multi-line Pydantic dump.
                return failure(name_fields(describe_validation_error(exc.__cause__)))
            raise


def _unknown_arguments(tool: str, unknown: list[str], known: frozenset[str]) -> CallToolResult:
    names = ", ".join(repr(n) for n in unknown)
    return failure(f"{tool} has no argument{'s' if len(unknown) > 1 else ''} {names} "
                   f"(it takes {', '.join(sorted(known))})")


def build_server(orch: Orchestrator | None = None) -> MCPServer[Any]:
    """A server with every abp tool and resource bound to `orch` (a new Orchestrator by default)."""
    from agentic_batch import __version__

    orch = orch or Orchestrator()
    server: MCPServer[Any] = AbpServer(
        "abp", title="agentic-batch", version=__version__, instructions=INSTRUCTIONS,
        log_level="DEBUG" if os.environ.get("ABP_DEBUG") else "WARNING",
    )
    job_tools.register(server, orch)
    control_tools.register(server, orch)
    read_tools.register(server, orch)
    change_tools.register(server, orch)
    dashboard_tools.register(server, orch)
    add_delete_tools.register(server, orch)
    resources.register(server, orch)
    return server


def run(http: bool = False, port: int = DEFAULT_HTTP_PORT) -> None:
    """Serve until the client disconnects (stdio) or the process is interrupted (HTTP)."""
    server = build_server()
    if http:
        print(f"abp MCP server on http://{HTTP_HOST}:{port}/mcp (Ctrl-C stops it; running jobs go on)",
              file=sys.stderr, flush=True)
        server.run("streamable-http", host=HTTP_HOST, port=port)
    else:
        server.run("stdio")
