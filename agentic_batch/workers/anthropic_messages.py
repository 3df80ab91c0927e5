"""The `anthropic` worker: a Claude model through the Messages API, with tools, without Claude Code.

Cheaper to start than the `claude` worker (no CLI process per unit) and enough when the file tools
and MCP tools suffice. Uses the official `anthropic` SDK (`AsyncAnthropic`) with SDK retries off, as
the engine owns retries; 429 (with retry-after), 529 overloaded, 5xx, timeouts and connection errors
come back retryable, a usage quota as `quota`, other 4xx as permanent. `ANTHROPIC_BASE_URL` is
honoured (by the SDK) when `base_url` is not set.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, WorkerKind
from agentic_batch.workers.tool_loop import (
    APIWorkerOptions,
    ModelCallError,
    ModelTurn,
    ToolCall,
    check_api_options,
    sdk_error,
    system_prompt,
    user_prompt,
)
from agentic_batch.workers.api_worker import MAX_REQUEST_TIMEOUT, SharedClientWorker
from agentic_batch.workers.tools import Toolbox, ToolResult



class AnthropicOptions(APIWorkerOptions):
    """Options of the `anthropic` worker (`--worker-option name=value`)."""

    model: str = Field(min_length=1, description="model name, e.g. claude-sonnet-4-5")
    base_url: str | None = Field(None, description="API base URL (default: ANTHROPIC_BASE_URL or "
                                                   "https://api.anthropic.com)")
    api_key_env: str = Field("ANTHROPIC_API_KEY", min_length=1,
                             description="name of the environment variable holding the API key")
    max_tokens: int = Field(4096, ge=1, description="cap on tokens per model reply (required by the API)")


class AnthropicMessagesWorker(SharedClientWorker):
    kind = "anthropic"
    sdk_module = "anthropic"
    extra = "anthropic"
    base_url_env = "ANTHROPIC_BASE_URL"
    options: AnthropicOptions

    def new_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        return sdk.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=MAX_REQUEST_TIMEOUT)

    def conversation(self, client: Any, sdk: Any, ctx: UnitContext, toolbox: Toolbox, timeout: float) -> Any:
        return _Messages(client, sdk, self.options, ctx, toolbox, timeout)


class _Messages:
    """The Messages wire format: content blocks, tool results sent back as a user turn."""

    def __init__(self, client: Any, sdk: Any, options: AnthropicOptions, ctx: UnitContext, toolbox: Toolbox,
                 timeout: float) -> None:
        self.client, self.sdk, self.options, self.timeout = client, sdk, options, timeout
        self.model = options.model
        self.tools = toolbox.anthropic_tools()
        self.system = system_prompt(ctx, options.system_prompt)
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user_prompt(ctx)}]

    def estimate_tokens(self) -> int:
        return (len(self.system) + len(json.dumps(self.messages)) + len(json.dumps(self.tools))) // 4

    def _request(self) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "max_tokens": self.options.max_tokens,
                                   "system": self.system, "messages": self.messages, "timeout": self.timeout}
        if self.tools:
            request["tools"] = self.tools
        if self.options.temperature is not None:
            request["temperature"] = min(self.options.temperature, 1.0)  # the API's range is 0..1
        return request

    async def complete(self) -> ModelTurn:
        try:
            response = await self.client.messages.create(**self._request())
        except Exception as exc:
            error = sdk_error(exc, self.sdk, self.sdk.AnthropicError)
            if error is None:
                raise
            raise error from exc
        try:
            return self._parse(response)
        except (AttributeError, TypeError, KeyError) as exc:
            raise ModelCallError(f"malformed response from the model API: {type(exc).__name__}: {exc}",
                                 ErrorClass.retryable, kind=FailureKind.malformed_response) from exc

    def _parse(self, response: Any) -> ModelTurn:
        texts: list[str] = []
        calls: list[ToolCall] = []
        wire_blocks: list[dict[str, Any]] = []
        for block in response.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
                wire_blocks.append({"type": "text", "text": block.text})
            elif kind == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                error = None if isinstance(block.input, dict) else f"tool input must be an object: {block.input!r}"
                calls.append(ToolCall(block.id, block.name, arguments, error=error))
                wire_blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": arguments})
        self.messages.append({"role": "assistant", "content": wire_blocks or [{"type": "text", "text": ""}]})
        usage = response.usage
        tokens_in = sum(int(getattr(usage, name, 0) or 0) for name in
                        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        return ModelTurn(text="".join(texts), tool_calls=calls, tokens_in=tokens_in,
                         tokens_out=int(getattr(usage, "output_tokens", 0) or 0),
                         stop_reason=getattr(response, "stop_reason", None))

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
