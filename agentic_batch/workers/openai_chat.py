"""The `openai` worker: any OpenAI-compatible `/v1/chat/completions` endpoint, with tools.

OpenAI itself, Ollama, vLLM, llama.cpp, LM Studio and OpenRouter all speak this API, so one worker
covers hosted and local models. It uses the official `openai` SDK (`AsyncOpenAI`) with SDK retries
off, because the engine owns the one retry loop; failures are classified (429 + retry-after,
5xx, connection and timeout -> retryable; quota -> quota; 4xx -> permanent) and handed back. The SDK
is imported only when a unit runs, so `abp status` never pays for it.
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

#: Reasoning models reject `max_tokens` and want `max_completion_tokens`.
_COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")


class OpenAIOptions(APIWorkerOptions):
    """Options of the `openai` worker (`--worker-option name=value`)."""

    model: str = Field(min_length=1, description="model name, e.g. gpt-4o-mini or llama3.1 (Ollama)")
    base_url: str | None = Field(None, description="API base URL ending in /v1 (default: OPENAI_BASE_URL or "
                                                   "https://api.openai.com/v1)")
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1,
                             description="name of the environment variable holding the API key")
    max_tokens: int | None = Field(None, ge=1, description="cap on tokens per model reply")


class OpenAIChatWorker(SharedClientWorker):
    kind = "openai"
    sdk_module = "openai"
    extra = "openai"
    base_url_env = "OPENAI_BASE_URL"
    options: OpenAIOptions

    def new_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        return sdk.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=MAX_REQUEST_TIMEOUT)

    def conversation(self, client: Any, sdk: Any, ctx: UnitContext, toolbox: Toolbox, timeout: float) -> Any:
        return _ChatCompletions(client, sdk, self.options, ctx, toolbox, timeout)


class _ChatCompletions:
    """The Chat Completions wire format: a flat message list with `tool` messages for results."""

    def __init__(self, client: Any, sdk: Any, options: OpenAIOptions, ctx: UnitContext, toolbox: Toolbox,
                 timeout: float) -> None:
        self.client, self.sdk, self.options, self.timeout = client, sdk, options, timeout
        self.model = options.model
        self.tools = toolbox.openai_tools()
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt(ctx, options.system_prompt)},
            {"role": "user", "content": user_prompt(ctx)},
        ]

    def estimate_tokens(self) -> int:
        return (len(json.dumps(self.messages)) + len(json.dumps(self.tools))) // 4

    def _request(self) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": self.messages, "timeout": self.timeout}
        if self.tools:
            request["tools"] = self.tools
        if self.options.temperature is not None:
            request["temperature"] = self.options.temperature
        if self.options.max_tokens is not None:
            name = self.model.rsplit("/", 1)[-1]
            field = "max_completion_tokens" if name.startswith(_COMPLETION_TOKENS_MODELS) else "max_tokens"
            request[field] = self.options.max_tokens
        return request

    async def complete(self) -> ModelTurn:
        try:
            response = await self.client.chat.completions.create(**self._request())
        except Exception as exc:
            error = sdk_error(exc, self.sdk, self.sdk.OpenAIError)
            if error is None:
                raise
            raise error from exc
        try:
            return self._parse(response)
        except (AttributeError, IndexError, TypeError, KeyError) as exc:
            raise ModelCallError(f"malformed response from the model API: {type(exc).__name__}: {exc}",
                                 ErrorClass.retryable, kind=FailureKind.malformed_response) from exc

    def _parse(self, response: Any) -> ModelTurn:
        if not response.choices:
            raise ModelCallError("malformed response from the model API: no choices", ErrorClass.retryable,
                                 kind=FailureKind.malformed_response)
        choice = response.choices[0]
        message = choice.message
        text = message.content or getattr(message, "refusal", None) or ""
        calls: list[ToolCall] = []
        wire_calls: list[dict[str, Any]] = []
        for raw in message.tool_calls or []:
            function = getattr(raw, "function", None)
            if function is None:  # a custom (non-function) tool call: nothing we offered
                continue
            calls.append(_tool_call(raw.id, function.name, function.arguments))
            wire_calls.append({"id": raw.id, "type": "function",
                               "function": {"name": function.name, "arguments": function.arguments or "{}"}})
        assistant: dict[str, Any] = {"role": "assistant", "content": message.content}
        if wire_calls:
            assistant["tool_calls"] = wire_calls
        self.messages.append(assistant)
        usage = response.usage
        return ModelTurn(text=text, tool_calls=calls,
                         tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
                         tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
                         stop_reason=choice.finish_reason)

    def add_tool_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None:
        for call, result in results:  # the API has no error flag: say so in the text
            content = f"Error: {result.content}" if result.is_error else result.content
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})


def _tool_call(call_id: str, name: str, arguments: str | None) -> ToolCall:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError as exc:
        return ToolCall(call_id, name, {}, error=f"tool arguments are not valid JSON ({exc}): {arguments!r}")
    if not isinstance(parsed, dict):
        return ToolCall(call_id, name, {}, error=f"tool arguments must be a JSON object, got {arguments!r}")
    return ToolCall(call_id, name, parsed)


def _check(options: Any, _prompt: str | None, _workdir: Any) -> None:
    check_api_options(options, sdk_module="openai", extra="openai", base_url_env="OPENAI_BASE_URL")


KIND = WorkerKind(
    kind="openai",
    summary="an OpenAI-compatible chat model (OpenAI, Ollama, vLLM, OpenRouter, ...) with file tools",
    options_model=OpenAIOptions,
    factory=lambda options: OpenAIChatWorker(options),
    prompt_required=True,
    check=_check,
)
