"""The agent loop shared by the API-model workers: ask the model, run its tools, repeat.

Providers differ only in wire format, so each worker supplies a small `ChatAdapter` (build the
request, parse the reply, append tool results) and this module owns everything else: the rate-limit
gate before every call, token and cost accounting, the `max_turns` stop, and emitting each step as it
happens (`usage`, `assistant`, `tool_use`, `tool_result`, then one `result`) so a user watching a
unit sees the agent work, and a unit that dies half-way still leaves its transcript in the store.
SDK exceptions become a `ModelCallError` with the engine's error class via `sdk_error`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome
from agentic_batch.workers.classify import (
    classify_message,
    classify_status,
    message_kind,
    parse_retry_after,
    quota_reset_in,
    status_kind,
)
from agentic_batch.workers.mcp_tools import MCPStartError, load_mcp_config, mcp_tools
from agentic_batch.workers.pricing import Pricing, usd
from agentic_batch.workers.tools import Toolbox, ToolResult, builtin_tools

EVENT_TEXT_LIMIT = 20_000
DEFAULT_SYSTEM_PROMPT = (
    "You are an autonomous agent working on one item of a batch job. Use the tools to inspect and "
    "change files; relative paths are resolved against the working directory and you cannot leave the "
    "allowed directories. When the task is done, reply with the final answer and no tool calls."
)


@dataclass
class ToolCall:
    """A tool call the model asked for. `error` is set when its arguments could not be parsed."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ModelTurn:
    """One parsed model reply."""

    text: str
    tool_calls: list[ToolCall]
    tokens_in: int
    tokens_out: int
    stop_reason: str | None = None


class ModelCallError(Exception):
    """A failed model request, already classified for the engine's retry loop (class and kind)."""

    def __init__(self, message: str, error_class: ErrorClass, retry_after: float | None = None,
                 kind: FailureKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.retry_after = retry_after
        self.kind = kind


class ChatAdapter(Protocol):
    """A provider's wire format. It keeps the conversation in the provider's own message shape."""

    model: str

    def estimate_tokens(self) -> int:
        """A rough size of the next request, for the engine's tokens-per-minute gate."""

    async def complete(self) -> ModelTurn:
        """Send the conversation, append the reply to it, return it parsed; raise ModelCallError."""

    def add_tool_results(self, results: list[tuple[ToolCall, ToolResult]]) -> None:
        """Append the results of the last turn's tool calls to the conversation."""


def user_prompt(ctx: UnitContext) -> str:
    """The first user message: the rendered prompt, plus the previous attempt's error if any."""
    prompt = ctx.prompt if ctx.prompt is not None else json.dumps(ctx.payload, ensure_ascii=False, default=str)
    return with_feedback(prompt, ctx.feedback)


def with_feedback(prompt: str, feedback: str | None) -> str:
    """The prompt with the previous attempt's error (online and in provider batches alike)."""
    if feedback:
        prompt += f"\n\nA previous attempt at this task failed with:\n{feedback}\nPlease fix that."
    return prompt


def system_prompt(ctx: UnitContext, custom: str | None) -> str:
    return f"{custom or DEFAULT_SYSTEM_PROMPT}\n\nWorking directory: {ctx.workspace}"


def truncate(text: str, limit: int = EVENT_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} characters truncated ...]"


async def run_tool_loop(ctx: UnitContext, adapter: ChatAdapter, toolbox: Toolbox, pricing: Pricing,
                        max_turns: int) -> UnitOutcome:
    """Drive the conversation to a final answer; every failure comes back as a classified outcome."""
    pricing.warn_if_unknown(ctx.emit)
    tokens_in = tokens_out = turns = 0
    cost = 0.0

    def finish(output: str | None, error: str | None = None, error_class: ErrorClass | None = None,
               retry_after: float | None = None, kind: FailureKind | None = None) -> UnitOutcome:
        result: dict[str, Any] = {"cost": cost, "tokens_in": tokens_in, "tokens_out": tokens_out,
                                  "turns": turns, "is_error": error is not None}
        if error is not None:
            result["error"] = error
        else:
            result["text"] = truncate(output or "")
        ctx.emit("result", result)
        return UnitOutcome(output=output, cost_usd=cost, tokens_in=tokens_in, tokens_out=tokens_out,
                           turns=turns, error=error, error_class=error_class, error_kind=kind,
                           retry_after=retry_after)

    while True:  # max_turns >= 1, checked after each call
        await ctx.gate.before_call(adapter.estimate_tokens())
        try:
            turn = await adapter.complete()
        except ModelCallError as exc:
            ctx.gate.after_call(0)
            return finish(None, exc.message, exc.error_class, exc.retry_after, exc.kind)
        except BaseException:
            ctx.gate.after_call(0)  # cancelled or timed out mid-request: release what the gate reserved
            raise
        ctx.gate.after_call(turn.tokens_in + turn.tokens_out)
        turns += 1
        call_cost = pricing.cost(turn.tokens_in, turn.tokens_out)
        tokens_in, tokens_out, cost = tokens_in + turn.tokens_in, tokens_out + turn.tokens_out, usd(cost + call_cost)
        ctx.emit("usage", {"model": adapter.model, "turn": turns, "tokens_in": turn.tokens_in,
                           "tokens_out": turn.tokens_out, "cost": call_cost, "stop_reason": turn.stop_reason})
        if turn.text:
            ctx.emit("assistant", {"text": turn.text})
        if not turn.tool_calls:
            return finish(turn.text)
        if turns >= max_turns:  # its tool results could never be read: stop before running them
            return finish(None, f"max turns ({max_turns}) reached without a final answer", ErrorClass.permanent,
                          kind=FailureKind.agent_limit)
        results: list[tuple[ToolCall, ToolResult]] = []
        for call in turn.tool_calls:
            ctx.emit("tool_use", {"id": call.id, "name": call.name, "input": call.arguments})
            if call.error is not None:
                result = ToolResult(call.error, is_error=True)
            else:
                result = await toolbox.call(call.name, call.arguments)
            ctx.emit("tool_result", {"tool_use_id": call.id, "content": truncate(result.content),
                                     "is_error": result.is_error})
            results.append((call, result))
        adapter.add_tool_results(results)


def status_error(status: int, message: str, body: Any, headers: Mapping[str, str]) -> ModelCallError:
    """Classify a failed HTTP response from what the SDK's APIStatusError holds (its `message`, its
    `body`); the lean path (lean_http) words its failures the same way, so both give one error."""
    fields = body if isinstance(body, dict) else {}
    detail = str(fields.get("message") or message)
    text = f"{message} {json.dumps(fields, default=str)}"  # type/code (e.g. insufficient_quota) count
    error_class = classify_status(status, text)
    retry_after = parse_retry_after(headers)
    if error_class is ErrorClass.quota:
        reset = quota_reset_in(text) or 0.0
        retry_after = reset if reset > 0 else retry_after
    return ModelCallError(f"HTTP {status}: {detail}", error_class, retry_after, status_kind(status, text))


def sdk_error(exc: BaseException, sdk: Any, base_error: type[BaseException]) -> ModelCallError | None:
    """Classify an exception from the `openai` or `anthropic` SDK (same class names in both).

    Returns None for exceptions that are not the SDK's (bugs should stay loud).
    """
    if isinstance(exc, sdk.APIStatusError):
        return status_error(exc.status_code, exc.message, exc.body, exc.response.headers)
    if isinstance(exc, sdk.APITimeoutError):
        return ModelCallError("model request timed out", ErrorClass.retryable, kind=FailureKind.timeout)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return ModelCallError(f"connection error: {cause or exc}", ErrorClass.retryable, kind=FailureKind.connection)
    if isinstance(exc, sdk.APIResponseValidationError | ValueError):
        # ValueError: a JSON body cut short raises json.JSONDecodeError from the SDK
        return ModelCallError(f"malformed response from the model API: {exc}", ErrorClass.retryable,
                              kind=FailureKind.malformed_response)
    if isinstance(exc, base_error):  # no status to go by: the text is all there is
        message = str(exc)
        return ModelCallError(message, classify_message(message) or ErrorClass.retryable, kind=message_kind(message))
    return None


# --- options and credentials shared by the API-model workers ------------------------------------

#: The worker option `http_client`: auto = aiohttp when installed, else httpx (lean_http); sdk = the SDK.
HTTPClientChoice = Literal["auto", "aiohttp", "httpx", "sdk"]
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class APIWorkerOptions(BaseModel):
    """Options common to the `openai` and `anthropic` workers (each adds its own defaults)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    base_url: str | None = None
    #: The NAME of the environment variable holding the key, never the key (jobs are stored).
    api_key_env: str = Field(min_length=1)
    max_turns: int = Field(20, ge=1)
    allow_commands: bool = False
    mcp_config: str | None = None
    price_in: float | None = Field(None, ge=0)
    price_out: float | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    system_prompt: str | None = None
    http_client: HTTPClientChoice = Field(
        "auto", description="how model calls are sent: auto (aiohttp if installed, else httpx: a JSON POST, "
                            "about a tenth of the SDK's CPU per call), aiohttp, httpx, or sdk (the official SDK)")

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str) -> str:
        """Catches a pasted key, which would otherwise be stored in the job spec in clear."""
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("mcp_config")
    @classmethod
    def _absolute_mcp_config(cls, value: str | None) -> str | None:
        """Made absolute at create time: the executor runs later, maybe from another directory."""
        return str(Path(value).expanduser().absolute()) if value else value


def is_local_url(url: str | None) -> bool:
    """A server on this machine (Ollama, vLLM, llama.cpp, a test server) needs no real key."""
    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def resolve_api_key(options: APIWorkerOptions, base_url: str | None) -> str | None:
    """The key from `api_key_env`; "not-needed" for a local server without one; None if missing."""
    key = os.environ.get(options.api_key_env)
    if key:
        return key
    return "not-needed" if is_local_url(base_url) else None


def missing_key_message(options: APIWorkerOptions) -> str:
    return (f"environment variable {options.api_key_env} (api_key_env) is not set; export the API key in it, "
            "or set api_key_env to the name of the variable that holds it")


def check_api_options(options: APIWorkerOptions, *, sdk_module: str, extra: str, base_url_env: str) -> None:
    """Create-time checks: the SDK is installed, the key is there, the MCP config parses."""
    resolve_choice(options.http_client, sdk_module, extra)
    base_url = options.base_url or os.environ.get(base_url_env)
    if resolve_api_key(options, base_url) is None:
        raise InvalidSpec(missing_key_message(options))
    if options.mcp_config:
        load_mcp_config(options.mcp_config)


def resolve_choice(choice: HTTPClientChoice, sdk_module: str, extra: str) -> HTTPClientChoice:
    """What `http_client` stands for on this install (`auto`: aiohttp, else httpx); InvalidSpec, with
    the extra that brings it, when its library is missing."""
    if choice == "auto":
        if importlib.util.find_spec("aiohttp") is not None:
            return "aiohttp"
        if importlib.util.find_spec("httpx") is not None:
            return "httpx"
        raise InvalidSpec("neither aiohttp nor httpx is installed", hint=f"pip install 'agentic-batch[{extra}]'")
    module = sdk_module if choice == "sdk" else choice
    if importlib.util.find_spec(module) is None:
        what = f"the {sdk_module} SDK" if choice == "sdk" else module
        brings = "aiohttp" if choice == "aiohttp" else extra
        raise InvalidSpec(f"{what} is not installed (http_client={choice})",
                          hint=f"pip install 'agentic-batch[{brings}]'")
    return choice


def import_sdk(sdk_module: str, extra: str) -> Any:
    """The provider SDK, imported only when a unit runs; a clear InvalidSpec when it is missing."""
    try:
        return importlib.import_module(sdk_module)
    except ImportError:
        raise InvalidSpec(f"the {sdk_module} SDK is not installed",
                          hint=f"install agentic-batch[{extra}]") from None


async def run_api_unit(ctx: UnitContext, options: APIWorkerOptions, pricing: Pricing,
                       make_adapter: Callable[[Toolbox], ChatAdapter]) -> UnitOutcome:
    """One unit of an API worker: start its MCP servers, build its toolbox, run the loop, clean up.
    The workspace exists already (the worker makes it)."""
    try:
        async with mcp_tools(options.mcp_config, ctx) as mcp_list:
            toolbox = Toolbox([*builtin_tools(ctx, allow_commands=options.allow_commands,
                                              command_timeout=ctx.timeout or None), *mcp_list])
            return await run_tool_loop(ctx, make_adapter(toolbox), toolbox, pricing, options.max_turns)
    except MCPStartError as exc:
        return UnitOutcome.failure(exc.message, exc.error_class, FailureKind.setup)
    except InvalidSpec as exc:  # e.g. the MCP config was deleted after the job was created
        return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent, FailureKind.setup)
