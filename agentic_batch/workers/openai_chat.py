"""The `openai` worker: any OpenAI-compatible `/v1/chat/completions` endpoint, with tools.

OpenAI itself, Ollama, vLLM, llama.cpp, LM Studio and OpenRouter all speak this API, so one worker
covers hosted and local models. A model call is one JSON POST on the lean path (`lean_http`), or
goes through the official `openai` SDK (`AsyncOpenAI`) with `http_client=sdk`; either way without
retries, because the engine owns the one retry loop: failures are classified (429 + retry-after,
5xx, connection and timeout -> retryable; quota -> quota; 4xx -> permanent) and handed back. The HTTP
library is imported only when a unit runs, so `abp status` never pays for it.
"""

from __future__ import annotations

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
from agentic_batch.workers.lean_http import openai_wording
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
    sdk_base_error = "OpenAIError"
    extra = "openai"
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = "https://api.openai.com/v1"
    endpoint = "/chat/completions"
    wording = staticmethod(openai_wording)
    options: OpenAIOptions

    def new_sdk_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        return sdk.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=MAX_REQUEST_TIMEOUT)

    async def sdk_call(self, client: Any, request: dict[str, Any], timeout: float) -> Any:
        return await client.chat.completions.create(**request, timeout=timeout)

    def lean_headers(self, api_key: str) -> dict[str, str]:
        """What AsyncOpenAI sends that the API reads: the key, and organization / project from the
        same environment variables the SDK reads."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                   "Accept": "application/json", "User-Agent": USER_AGENT}
        for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if value := os.environ.get(variable):
                headers[header] = value
        return headers

    def format_tools(self, toolbox: Toolbox) -> list[dict[str, Any]]:
        return toolbox.openai_tools()

    def conversation(self, send: Send, ctx: UnitContext, tools: tuple[list[dict[str, Any]], int],
                     timeout: float) -> ChatAdapter:
        return _ChatCompletions(send, self.options, ctx, tools, timeout)


class _ChatCompletions:
    """The Chat Completions wire format: a flat message list with `tool` messages for results."""

    def __init__(self, send: Send, options: OpenAIOptions, ctx: UnitContext,
                 tools: tuple[list[dict[str, Any]], int], timeout: float) -> None:
        self.send, self.options, self.timeout = send, options, timeout
        self.model = options.model
        self.tools, self.tools_size = tools
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_prompt(ctx, options.system_prompt)},
            {"role": "user", "content": user_prompt(ctx)},
        ]

    def estimate_tokens(self) -> int:
        return (len(json.dumps(self.messages)) + self.tools_size) // 4

    def _request(self) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": self.messages}
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
        response = await self.send(self._request(), self.timeout)
        try:
            return self._parse(response)
        except (AttributeError, IndexError, TypeError, KeyError) as exc:
            raise ModelCallError(f"malformed response from the model API: {type(exc).__name__}: {exc}",
                                 ErrorClass.retryable, kind=FailureKind.malformed_response) from exc

    def _parse(self, response: dict[str, Any]) -> ModelTurn:
        """The reply as JSON (the lean path's dict, or the SDK model dumped to one)."""
        choices = response.get("choices")
        if not choices:
            raise ModelCallError("malformed response from the model API: no choices", ErrorClass.retryable,
                                 kind=FailureKind.malformed_response)
        choice = choices[0]
        message = choice["message"]
        content = message.get("content")
        text = content or message.get("refusal") or ""
        calls: list[ToolCall] = []
        wire_calls: list[dict[str, Any]] = []
        for raw in message.get("tool_calls") or []:
            function = raw.get("function")
            if function is None:  # a custom (non-function) tool call: nothing we offered
                continue
            calls.append(_tool_call(raw["id"], function["name"], function.get("arguments")))
            wire_calls.append({"id": raw["id"], "type": "function",
                               "function": {"name": function["name"], "arguments": function.get("arguments") or "{}"}})
        assistant: dict[str, Any] = {"role": "assistant", "content": content}
        if wire_calls:
            assistant["tool_calls"] = wire_calls
        self.messages.append(assistant)
        usage = response.get("usage") or {}
        return ModelTurn(text=text, tool_calls=calls,
                         tokens_in=int(usage.get("prompt_tokens") or 0),
                         tokens_out=int(usage.get("completion_tokens") or 0),
                         stop_reason=choice.get("finish_reason"))

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
