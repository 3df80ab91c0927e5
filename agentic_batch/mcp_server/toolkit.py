"""Registering a tool: its docstring is its description, and hints say whether it changes anything.

The hints (read-only, destructive, idempotent) let a client such as Claude Code ask before a
cancel but not before a status poll.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.types import ToolAnnotations


def add_tool(server: MCPServer[Any], fn: Callable[..., Any], *, title: str, read_only: bool = False,
             destructive: bool = False, idempotent: bool = False) -> None:
    server.add_tool(
        fn,
        title=title,
        description=inspect.getdoc(fn),
        annotations=ToolAnnotations(title=title, read_only_hint=read_only, destructive_hint=destructive,
                                    idempotent_hint=idempotent, open_world_hint=False),
        structured_output=None,  # a return annotated `Annotated[CallToolResult, Model]` publishes Model
    )
    known = getattr(server, "tool_arguments", None)
    if known is not None:  # AbpServer refuses any other argument (the SDK would drop it silently)
        context = find_context_parameter(fn)
        known[fn.__name__] = frozenset(name for name in inspect.signature(fn).parameters if name != context)
