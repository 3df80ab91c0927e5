"""What the scripted Anthropic server can answer, and how a reply looks on the wire.

Kept apart from the HTTP plumbing so a script reads as data: `Reply.tool_use("Write", {...})`,
`Reply.error(529)`, `Reply.hang(30)`. The wire shapes follow the public Messages API: a JSON
message when `stream` is false, else the SSE sequence `message_start`, per block
`content_block_start` / `content_block_delta`* / `content_block_stop`, `message_delta` (stop reason
and usage) and `message_stop`. Text and tool input are split into several deltas, as the real API
does, so a client's incremental parsing is exercised too.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ReplyKind = Literal["message", "error", "hang", "malformed"]

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_DELTA_SIZE = 24


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one `POST /v1/messages`. Build it with the class methods."""

    kind: ReplyKind = "message"
    blocks: tuple[dict[str, Any], ...] = ()
    stop_reason: str = "end_turn"
    usage: tuple[int, int] = (10, 5)
    #: Seconds to wait before answering (None: the server's default latency).
    latency: float | None = None
    #: Seconds between SSE events, to make a stream arrive slowly.
    stream_delay: float = 0.0
    status: int = 200
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: For hangs: how long, and whether to send `message_start` first (a stalled stream).
    seconds: float = 0.0
    after_start: bool = False

    @classmethod
    def text(cls, text: str, *, usage: tuple[int, int] = (10, 5), latency: float | None = None,
             stop_reason: str = "end_turn") -> Reply:
        return cls(blocks=({"type": "text", "text": text},), usage=usage, latency=latency,
                   stop_reason=stop_reason)

    @classmethod
    def tool_use(cls, name: str, input: dict[str, Any], *, text_before: str | None = None,
                 id: str | None = None, usage: tuple[int, int] = (10, 5),
                 latency: float | None = None) -> Reply:
        """A turn that calls one tool; the client runs it and sends back a tool_result."""
        blocks: list[dict[str, Any]] = []
        if text_before:
            blocks.append({"type": "text", "text": text_before})
        blocks.append({"type": "tool_use", "id": id or f"toolu_{uuid.uuid4().hex[:20]}",
                       "name": name, "input": input})
        return cls(blocks=tuple(blocks), stop_reason="tool_use", usage=usage, latency=latency)

    @classmethod
    def tool_uses(cls, calls: list[tuple[str, dict[str, Any]]], *, usage: tuple[int, int] = (10, 5),
                  latency: float | None = None) -> Reply:
        """A turn with several parallel tool calls."""
        blocks = tuple({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": n, "input": i}
                       for n, i in calls)
        return cls(blocks=blocks, stop_reason="tool_use", usage=usage, latency=latency)

    @classmethod
    def thinking(cls, thinking: str, text: str, *, usage: tuple[int, int] = (10, 5),
                 latency: float | None = None) -> Reply:
        """A thinking block followed by text (the signature is fake; the CLI only echoes it back)."""
        blocks = ({"type": "thinking", "thinking": thinking, "signature": "c2lnbmF0dXJl"},
                  {"type": "text", "text": text})
        return cls(blocks=blocks, usage=usage, latency=latency)

    @classmethod
    def error(cls, status: int, type: str | None = None, message: str | None = None,
              headers: dict[str, str] | None = None, *, latency: float | None = None) -> Reply:
        etype = type or _DEFAULT_ERROR_TYPES.get(status, "api_error")
        return cls(kind="error", status=status, error_type=etype,
                   message=message or f"scripted {status} {etype}", headers=dict(headers or {}),
                   latency=latency)

    @classmethod
    def hang(cls, seconds: float = 3600.0, *, after_start: bool = False) -> Reply:
        """Never answer (until `seconds` pass or the server stops), or stall mid-stream."""
        return cls(kind="hang", seconds=seconds, after_start=after_start)

    @classmethod
    def malformed(cls, *, latency: float | None = None) -> Reply:
        """A 200 whose body is not valid JSON / SSE."""
        return cls(kind="malformed", latency=latency)

    def with_latency(self, seconds: float) -> Reply:
        return replace(self, latency=seconds)

    def error_body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def message_json(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streaming body of a message reply."""
    in_tokens, out_tokens = reply.usage
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": model or "claude-scripted",
        "content": [dict(b) for b in reply.blocks],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _pieces(text: str) -> list[str]:
    return [text[i:i + _DELTA_SIZE] for i in range(0, len(text), _DELTA_SIZE)] or [""]


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    btype = block["type"]
    if btype == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
    elif btype == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(json.dumps(block["input"]))]
    elif btype == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
    else:
        raise ValueError(f"unknown block type {btype!r}")
    out = [_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    out += [_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas]
    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def sse_events(reply: Reply, model: str) -> list[bytes]:
    """The SSE events of a message reply, each already framed (`event:` + `data:` + blank line)."""
    in_tokens, out_tokens = reply.usage
    start = {
        "type": "message_start",
        "message": {
            "id": _message_id(), "type": "message", "role": "assistant", "model": model or "claude-scripted",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": in_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        },
    }
    events = [_sse("message_start", start)]
    for index, block in enumerate(reply.blocks):
        events += _block_events(index, block)
    events.append(_sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": out_tokens},
    }))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events
