"""Calling the service from a tool, and turning what it returns (or raises) into a tool result.

Service methods are synchronous and may block for minutes (a test run executes an agent), so every
call runs in a worker thread: the server keeps answering other requests (status polls, a second
client over HTTP) meanwhile.

Errors a user can fix (`AbpError`) come back as a tool result with `isError` and exactly the CLI's
one line, not as a protocol error: the model reads it and can correct its call. We build that
result ourselves instead of raising `ToolError`, because the SDK would prefix the message with
"Error executing tool ...", and the point is that every interface says the same words.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from agentic_batch.errors import AbpError
from agentic_batch.mcp_server.budget import fit_result
from agentic_batch.service.models import plain
from agentic_batch.store.faults import store_error_for

log = logging.getLogger("agentic_batch.mcp")
T = TypeVar("T")


def to_json(data: Any) -> str:
    return json.dumps(plain(data), ensure_ascii=False, default=str)


def ok(data: dict[str, Any] | BaseModel) -> CallToolResult:
    """A successful result: the same JSON as text (what a model reads) and as structured content,
    never over the result budget (see budget.py)."""
    safe = fit_result(plain(data))  # structured content must be plain JSON
    return CallToolResult(content=[TextContent(type="text", text=to_json(safe))], structured_content=safe)


def failure(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking service call in a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def respond(fn: Callable[[], dict[str, Any] | BaseModel]) -> CallToolResult:
    """Run `fn` (which calls the service and shapes its answer) in a thread; errors become tool errors."""
    return await respond_async(lambda: in_thread(fn))


async def respond_async(fn: Callable[[], Awaitable[dict[str, Any] | BaseModel]]) -> CallToolResult:
    """Await `fn` (async: it runs its service calls in threads itself); errors become tool errors."""
    try:
        return ok(await fn())
    except AbpError as exc:
        return failure(exc.one_line())
    except Exception as exc:  # a bug: say so in one line, keep the traceback in the server's log
        store_error = store_error_for(exc)  # a store fault: one line, no SQL, no item data
        if store_error is not None:
            log.warning("tool call failed: %s", store_error.message)
            return failure(store_error.one_line())
        log.exception("tool call failed")
        if os.environ.get("ABP_DEBUG"):
            raise
        return failure(f"internal error: {type(exc).__name__}: {exc} (set ABP_DEBUG=1 for the traceback "
                       "in the MCP server's log)")
