"""Tools from MCP servers (`--mcp-config`), offered to an API-model agent for one unit.

For each unit the configured servers are started (see `mcp_connect` for the config and transports),
their tools listed and exposed as `mcp__<server>__<tool>`, and everything is shut down when the unit
ends, so units never share server state. Stdio servers run in the unit's workspace and are registered
with the unit's tracker, so a timeout or a cancel takes them down with the unit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from agentic_batch.workers.base import UnitContext
from agentic_batch.workers.mcp_connect import (
    MCPServerConfig,
    MCPStartError,
    content_text,
    describe_error,
    load_mcp_config,
    open_session,
    unwrap_group,
)
from agentic_batch.workers.tools import Tool, ToolError, ToolResult

__all__ = ["MCPServerConfig", "MCPStartError", "load_mcp_config", "mcp_tools", "tool_name"]

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, tool: str) -> str:
    """`mcp__<server>__<tool>`, limited to the characters and length both APIs accept."""
    return _NAME_UNSAFE.sub("_", f"mcp__{server}__{tool}")[:64]


@asynccontextmanager
async def mcp_tools(config_path: str | Path | None, ctx: UnitContext) -> AsyncIterator[list[Tool]]:
    """Start the configured servers for one unit and yield their tools; stop them all on exit."""
    if not config_path:
        yield []
        return
    servers = load_mcp_config(config_path)
    raised: list[BaseException] = []
    try:
        async with AsyncExitStack() as stack:
            tools: list[Tool] = []
            try:
                for server in servers:
                    cwd = ctx.in_worktree(Path(server.cwd)) if server.cwd else ctx.workspace
                    opened = await open_session(server, stack, tracker=ctx.processes, cwd=cwd)
                    for listed_tool in opened.tools:
                        tool = _make_tool(server.name, opened.session, listed_tool)
                        if any(t.name == tool.name for t in tools):  # two names that sanitise alike
                            ctx.emit("warning", {"message": f"MCP tool {listed_tool.name!r} of server "
                                                            f"{server.name!r} skipped: duplicate name {tool.name}"})
                            continue
                        tools.append(tool)
                yield tools
            except BaseException as exc:
                raised.append(exc)
                raise
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap whatever crosses them; give callers back the real exception.
        raise unwrap_group(group, raised) from None


def _make_tool(server: str, session: Any, listed: Any) -> Tool:
    schema = dict(listed.input_schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    description = listed.description or f"{listed.name} (from MCP server {server})"

    async def call(arguments: dict[str, Any]) -> ToolResult:
        import anyio
        from mcp import MCPError

        try:
            result = await session.call_tool(listed.name, arguments)
        except MCPError as exc:
            raise ToolError(f"MCP server {server!r}: {exc.error.message}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            raise ToolError(f"MCP server {server!r} is no longer running") from None
        except Exception as exc:
            raise ToolError(f"MCP server {server!r}: {describe_error(exc)}") from None
        return ToolResult(content_text(result), is_error=bool(result.is_error))

    return Tool(tool_name(server, listed.name), description, schema, call)
