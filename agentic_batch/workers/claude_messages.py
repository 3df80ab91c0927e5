"""Turning claude-agent-sdk messages into the engine's event stream and into a unit's result.

Kept apart from the worker's process handling so the mapping is readable (and testable) on its own:
one SDK message becomes zero or more `(kind, data)` events, emitted as it arrives, so the
dashboard shows an agent's tool calls while the unit is still running. Event data must be JSON and
bounded: tool inputs and results can hold whole files, so long strings are truncated.

Imported only after the SDK is known to be installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    RateLimitEvent,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

MAX_TEXT = 20_000
#: Keys of the (large) init message worth keeping: enough to see what the agent could do.
_INIT_KEYS = ("session_id", "model", "cwd", "tools", "mcp_servers", "permissionMode",
              "claude_code_version", "apiKeySource")

Event = tuple[str, dict[str, Any]]


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def _bounded(value: Any, limit: int = MAX_TEXT) -> Any:
    """A JSON-safe copy of a tool input with every long string truncated."""
    if isinstance(value, str):
        return truncate(value, limit)
    if isinstance(value, dict):
        return {str(k): _bounded(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(v, limit) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return truncate(str(value), limit)


def tool_result_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a tool result (a string, or content blocks of which we keep the text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            parts.append(f"[{block.get('type', 'block')}]")
    return "\n".join(parts)


@dataclass
class RunState:
    """What the worker learns from the message stream, beyond the events it emits."""

    result: ResultMessage | None = None
    session_id: str | None = None
    #: An assistant message's `error` (e.g. "authentication_failed", "rate_limit").
    assistant_error: str | None = None
    last_text: str = ""
    #: Epoch seconds when a rejected rate limit resets (from RateLimitEvent), if reported.
    rate_limit_resets_at: float | None = None
    turns_seen: int = 0
    tool_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def events_for(message: Any, state: RunState) -> Iterator[Event]:
    """The events one SDK message produces, updating `state` on the way."""
    if isinstance(message, AssistantMessage):
        state.turns_seen += 1
        if message.error:
            state.assistant_error = message.error
        parent = {"parent_tool_use_id": message.parent_tool_use_id} if message.parent_tool_use_id else {}
        for block in message.content:
            if isinstance(block, TextBlock):
                state.last_text = block.text
                data: dict[str, Any] = {"text": truncate(block.text), **parent}
                if message.error:
                    data["error"] = message.error
                yield "assistant", data
            elif isinstance(block, ThinkingBlock):
                yield "thinking", {"text": truncate(block.thinking), **parent}
            elif isinstance(block, ToolUseBlock):
                state.tool_calls += 1
                yield "tool_use", {"id": block.id, "name": block.name, "input": _bounded(block.input), **parent}
            elif hasattr(block, "name") and hasattr(block, "input"):  # server-side tools (web search)
                yield "tool_use", {"id": getattr(block, "id", None), "name": block.name,
                                   "input": _bounded(block.input), "server": True, **parent}
    elif isinstance(message, UserMessage):
        if isinstance(message.content, list):
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    yield "tool_result", {
                        "tool_use_id": block.tool_use_id,
                        "content": truncate(tool_result_text(block.content)),
                        "is_error": bool(block.is_error),
                    }
    elif isinstance(message, ResultMessage):
        state.result = message
        state.session_id = message.session_id or state.session_id
        yield "result", {
            "cost": message.total_cost_usd,
            "usage": _bounded(message.usage or {}),
            "turns": message.num_turns,
            "session_id": message.session_id,
            "duration_ms": message.duration_ms,
            "is_error": message.is_error,
            "subtype": message.subtype,
            "api_error_status": message.api_error_status,
            "terminal_reason": message.terminal_reason,
            "errors": message.errors or [],
        }
    elif isinstance(message, RateLimitEvent):
        info = message.rate_limit_info
        if info.status == "rejected" and info.resets_at:
            state.rate_limit_resets_at = float(info.resets_at)
        yield "rate_limit", {"status": info.status, "resets_at": info.resets_at,
                             "type": info.rate_limit_type, "utilization": info.utilization}
    elif isinstance(message, SystemMessage):
        data = dict(message.data or {})
        if message.subtype == "init":
            state.session_id = data.get("session_id") or state.session_id
            data = {k: data[k] for k in _INIT_KEYS if k in data}
        data.pop("type", None)
        data.pop("uuid", None)
        yield "system", {"subtype": message.subtype, **_bounded(data)}


def usage_tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(tokens in, tokens out): cache writes and reads count as input, as they are billed."""
    if not usage:
        return 0, 0

    def num(key: str) -> int:
        value = usage.get(key)
        return int(value) if isinstance(value, int | float) else 0

    tokens_in = num("input_tokens") + num("cache_creation_input_tokens") + num("cache_read_input_tokens")
    return tokens_in, num("output_tokens")


def seconds_until(epoch: float | None) -> float | None:
    return None if epoch is None else max(0.0, epoch - time.time())
