"""What the `openai` and `anthropic` workers share: one HTTP client per event loop (so concurrent
units share a connection pool), the API key lookup, and the path from a unit to the tool loop.

A model call goes through a `Send` function: by default the lean path (`lean_http`: aiohttp, or
httpx when aiohttp is missing, posting the JSON body and reading the reply as a dict), or the
official SDK with `http_client=sdk`. Both give the adapter the same dict and the same classified
errors. A subclass names its SDK and endpoint and says how to make a conversation in its wire format.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from agentic_batch import __version__
from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome
from agentic_batch.workers.lean_http import LeanClient, StatusWording, new_transport
from agentic_batch.workers.pricing import Pricing
from agentic_batch.workers.tool_loop import (
    APIWorkerOptions,
    ChatAdapter,
    HTTPClientChoice,
    import_sdk,
    missing_key_message,
    resolve_api_key,
    resolve_choice,
    run_api_unit,
    sdk_error,
)
from agentic_batch.workers.tools import Toolbox

MAX_REQUEST_TIMEOUT = 600.0
USER_AGENT = f"agentic-batch/{__version__}"

#: One model call: the request body (JSON-able) and the request timeout -> the reply as a dict.
Send = Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]]


class SharedClientWorker(abc.ABC):
    kind = ""
    sdk_module = ""
    #: The SDK's base exception class (errors without a status are classified from its text).
    sdk_base_error = ""
    extra = ""
    base_url_env = ""
    #: The API root when neither `base_url` nor the environment names one.
    default_base_url = ""
    #: The model-call path under the base URL.
    endpoint = ""
    #: How the provider's SDK words a failed response (see lean_http).
    wording: StatusWording

    def __init__(self, options: APIWorkerOptions) -> None:
        self.options = options
        self.pricing = Pricing(options.model, options.price_in, options.price_out)
        self._client: Any = None
        self._send: Send | None = None
        self._client_key: tuple[int, str] | None = None
        self._choice: HTTPClientChoice | None = None
        #: Tool definitions in this wire format and their JSON size, by tool names (built-in tools only).
        self._tool_defs: dict[tuple[str, ...], tuple[list[dict[str, Any]], int]] = {}
        #: The last workspace this worker made sure exists (a JSONL job's units all share one).
        self._workspace_made: Path | None = None

    def _base_url(self) -> str | None:
        return self.options.base_url or os.environ.get(self.base_url_env) or None

    @abc.abstractmethod
    def new_sdk_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        """The SDK client for this wire format (AsyncOpenAI, AsyncAnthropic)."""

    @abc.abstractmethod
    async def sdk_call(self, client: Any, request: dict[str, Any], timeout: float) -> Any:
        """Send `request` through the SDK client; return the SDK's response model."""

    @abc.abstractmethod
    def lean_headers(self, api_key: str) -> dict[str, str]:
        """The headers the SDK would send that the API needs (credentials, version)."""

    @abc.abstractmethod
    def format_tools(self, toolbox: Toolbox) -> list[dict[str, Any]]:
        """The toolbox's tool definitions in this wire format."""

    @abc.abstractmethod
    def conversation(self, send: Send, ctx: UnitContext, tools: tuple[list[dict[str, Any]], int],
                     timeout: float) -> ChatAdapter:
        """A ChatAdapter holding one unit's message list in this wire format; `tools` as `tool_defs` gives them."""

    def tool_defs(self, toolbox: Toolbox) -> tuple[list[dict[str, Any]], int]:
        """The toolbox's definitions in this wire format and their JSON size (for the token estimate).
        Built-in tools are the same for every unit of a job (only their handlers differ), so they are
        formatted once; a job with MCP servers formats each unit's own."""
        key = tuple(toolbox.names)
        found = self._tool_defs.get(key) if self.options.mcp_config is None else None
        if found is None:
            defs = self.format_tools(toolbox)
            found = (defs, len(json.dumps(defs)))
            if self.options.mcp_config is None:
                self._tool_defs[key] = found
        return found

    def _resolved_choice(self) -> HTTPClientChoice:
        if self._choice is None:
            self._choice = resolve_choice(self.options.http_client, self.sdk_module, self.extra)
        return self._choice

    def prepare(self) -> None:
        """Import the HTTP library in the engine's start-up thread, so the first unit does not pay for it."""
        try:
            choice = self._resolved_choice()
            import_sdk(self.sdk_module if choice == "sdk" else choice, self.extra)
        except InvalidSpec:
            pass  # reported by the first unit

    def _sender(self, choice: HTTPClientChoice, api_key: str) -> Send:
        """One client per event loop, shared by concurrent units so they share a connection pool."""
        key = (id(asyncio.get_running_loop()), api_key)
        if self._send is None or self._client_key != key:
            base_url = self._base_url()
            if choice == "sdk":
                sdk = import_sdk(self.sdk_module, self.extra)
                client = self.new_sdk_client(sdk, api_key, base_url)
                self._client, self._send = client, self._sdk_sender(client, sdk)
            else:
                url = (base_url or self.default_base_url).rstrip("/") + self.endpoint
                lean = LeanClient(new_transport(choice, self.lean_headers(api_key), url), url, self.wording)
                self._client, self._send = lean, lean.send
            self._client_key = key
        return self._send

    def _sdk_sender(self, client: Any, sdk: Any) -> Send:
        async def send(request: dict[str, Any], timeout: float) -> dict[str, Any]:
            try:
                response = await self.sdk_call(client, request, timeout)
            except Exception as exc:
                error = sdk_error(exc, sdk, getattr(sdk, self.sdk_base_error))
                if error is None:
                    raise
                raise error from exc
            dumped: dict[str, Any] = response.model_dump()
            return dumped

        return send

    async def aclose(self) -> None:
        """Close the shared HTTP client (the engine calls it when the job ends)."""
        if self._client is not None:
            client, self._client, self._send, self._client_key = self._client, None, None, None
            await client.close()

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        try:
            choice = self._resolved_choice()
            if choice == "sdk":
                import_sdk(self.sdk_module, self.extra)
        except InvalidSpec as exc:
            return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent, FailureKind.setup)
        api_key = resolve_api_key(self.options, self._base_url())
        if api_key is None:
            return UnitOutcome.failure(missing_key_message(self.options), ErrorClass.permanent, FailureKind.setup)
        send = self._sender(choice, api_key)
        timeout = min(ctx.timeout, MAX_REQUEST_TIMEOUT) if ctx.timeout and ctx.timeout > 0 else MAX_REQUEST_TIMEOUT
        if ctx.workspace != self._workspace_made:  # tools and MCP servers run in it
            ctx.workspace.mkdir(parents=True, exist_ok=True)
            self._workspace_made = ctx.workspace
        return await run_api_unit(ctx, self.options, self.pricing,
                                  lambda toolbox: self.conversation(send, ctx, self.tool_defs(toolbox), timeout))
