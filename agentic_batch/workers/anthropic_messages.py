"""The `anthropic` worker: a Claude model through the Messages API, with tools, without Claude Code.

Cheaper to start than the `claude` worker (no CLI process per unit) and enough when the file tools
and MCP tools suffice. A model call is one JSON POST on the lean path (`lean_http`), or goes through
the official `anthropic` SDK (`AsyncAnthropic`) with `http_client=sdk`; either way without retries, as
the engine owns retries: 429 (with retry-after), 529 overloaded, 5xx, timeouts and connection errors
come back retryable, a usage quota as `quota`, other 4xx as permanent. `ANTHROPIC_BASE_URL` is
honoured when `base_url` is not set.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any

from pydantic import Field

from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, WorkerKind
from agentic_batch.workers.tool_loop import (
    APIWorkerOptions,
    ChatAdapter,
    ModelCallError,
    ModelTurn,
    ToolCall,
    check_api_options,
    system_prompt,
    user_prompt,
)
from agentic_batch.workers.api_worker import MAX_REQUEST_TIMEOUT, USER_AGENT, Send, SharedClientWorker
from agentic_batch.workers.lean_http import anthropic_wording
from agentic_batch.workers.tools import Toolbox, ToolResult

#: The Messages API version the lean path asks for (the response shape `_parse` reads).
ANTHROPIC_VERSION = "2023-06-01"

class AnthropicOptions(APIWorkerOptions):
    """Options of the `anthropic` worker (`--worker-option name=value`)."""

    model: str = Field(min_length=1, description="model name, e.g. claude-sonnet-4-5")
    base_url: str | None = Field(None, description="API base URL (default: ANTHROPIC_BASE_URL or "
                                                   "https://api.anthropic.com)")
    api_key_env: str = Field("ANTHROPIC_API_KEY", min_length=1,
                             description="name of the environment variable holding the API key")
    max_tokens: int = Field(4096, ge=1, description="cap on tokens per model reply (required by the API)")


@functools.cache
def _parameters_of(function: Any) -> frozenset[str]:
    return frozenset(inspect.signature(function).parameters)


def _create_parameters(create: Any) -> frozenset[str]:
    return _parameters_of(getattr(create, "__func__", create))


class AnthropicMessagesWorker(SharedClientWorker):
    kind = "anthropic"
    sdk_module = "anthropic"
    sdk_base_error = "AnthropicError"
    extra = "anthropic"
    base_url_env = "ANTHROPIC_BASE_URL"
    default_base_url = "https://api.anthropic.com"
    endpoint = "/v1/messages"
    wording = staticmethod(anthropic_wording)
    options: AnthropicOptions

    def new_sdk_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        return sdk.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=MAX_REQUEST_TIMEOUT)

    async def sdk_call(self, client: Any, request: dict[str, Any], timeout: float) -> Any:
        """The body's fields that this SDK's `messages.create` no longer names (anthropic 2.x dropped
        `temperature`) go in `extra_body`, so the request on the wire is the lean path's."""
        create = client.messages.create
        named = _create_parameters(create)
        extra = {key: value for key, value in request.items() if key not in named}
        known = {key: value for key, value in request.items() if key in named}
        return await create(**known, **({"extra_body": extra} if extra else {}), timeout=timeout)

    def lean_headers(self, api_key: str) -> dict[str, str]:
        """The Messages API's key header and version; a bearer token from ANTHROPIC_AUTH_TOKEN as the
        SDK sends it (a gateway in front of the API may want one)."""
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION, "Content-Type": "application/json",
                   "Accept": "application/json", "User-Agent": USER_AGENT}
        if token := os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def format_tools(self, toolbox: Toolbox) -> list[dict[str, Any]]:
        return toolbox.anthropic_tools()

    def conversation(self, send: Send, ctx: UnitContext, tools: tuple[list[dict[str, Any]], int],
                     timeout: float) -> ChatAdapter:
        return _Messages(send, self.options, ctx, tools, timeout)


class _Messages:
    """The Messages wire format: content blocks, tool results sent back as a user turn."""

    def __init__(self, send: Send, options: AnthropicOptions, ctx: UnitContext,
                 tools: tuple[list[dict[str, Any]], int], timeout: float) -> None:
        self.send, self.options, self.timeout = send, options, timeout
        self.model = options.model
        self.tools, self.tools_size = tools
        self.system = system_prompt(ctx, options.system_prompt)
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user_prompt(ctx)}]

    def estimate_tokens(self) -> int:
        return (len(self.system) + len(json.dumps(self.messages)) + self.tools_size) // 4

    def _request(self) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "max_tokens": self.options.max_tokens,
                                   "system": self.system, "messages": self.messages}
        if self.tools:
            request["tools"] = self.tools
        if self.options.temperature is not None:
            request["temperature"] = min(self.options.temperature, 1.0)  # the API's range is 0..1
        return request

    async def complete(self) -> ModelTurn:
        response = await self.send(self._request(), self.timeout)
        try:
            return self._parse(response)
        except (AttributeError, TypeError, KeyError) as exc:
            raise ModelCallError(f"malformed response from the model API: {type(exc).__name__}: {exc}",
                                 ErrorClass.retryable, kind=FailureKind.malformed_response) from exc

    def _parse(self, response: dict[str, Any]) -> ModelTurn:
        """The reply as JSON (the lean path's dict, or the SDK model dumped to one)."""
        texts: list[str] = []
        calls: list[ToolCall] = []
        wire_blocks: list[dict[str, Any]] = []
        for block in response["content"]:
            kind = block.get("type")
            if kind == "text":
                texts.append(block["text"])
                wire_blocks.append({"type": "text", "text": block["text"]})
            elif kind == "tool_use":
                raw_input = block.get("input")
                arguments = raw_input if isinstance(raw_input, dict) else {}
                error = None if isinstance(raw_input, dict) else f"tool input must be an object: {raw_input!r}"
                calls.append(ToolCall(block["id"], block["name"], arguments, error=error))
                wire_blocks.append({"type": "tool_use", "id": block["id"], "name": block["name"], "input": arguments})
        self.messages.append({"role": "assistant", "content": wire_blocks or [{"type": "text", "text": ""}]})
        usage = response.get("usage") or {}
        tokens_in = sum(int(usage.get(name) or 0) for name in
                        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        return ModelTurn(text="".join(texts), tool_calls=calls, tokens_in=tokens_in,
                         tokens_out=int(usage.get("output_tokens") or 0),
                         stop_reason=response.get("stop_reason"))

    def add_tool_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None:
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": result.content or "(no output)",
             "is_error": result.is_error}
            for call, result in results
        ]})


def _check(options: Any, _prompt: str | None, _workdir: Any) -> None:
    check_api_options(options, sdk_module="anthropic", extra="anthropic", base_url_env="ANTHROPIC_BASE_URL")


KIND = WorkerKind(
    kind="anthropic",
    summary="a Claude model through the Anthropic Messages API, with file tools (no Claude Code CLI)",
    options_model=AnthropicOptions,
    factory=lambda options: AnthropicMessagesWorker(options),
    prompt_required=True,
    check=_check,
)
