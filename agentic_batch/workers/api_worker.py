"""What the `openai` and `anthropic` workers share: one SDK client per event loop (so concurrent
units share a connection pool), the API key lookup, and the path from a unit to the tool loop.
A subclass names its SDK and says how to make a client and a conversation in its wire format.
"""

from __future__ import annotations

import abc
import asyncio
import os
from typing import Any

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome
from agentic_batch.workers.pricing import Pricing
from agentic_batch.workers.tool_loop import (
    APIWorkerOptions,
    import_sdk,
    missing_key_message,
    resolve_api_key,
    run_api_unit,
)
from agentic_batch.workers.tools import Toolbox

MAX_REQUEST_TIMEOUT = 600.0


class SharedClientWorker(abc.ABC):
    kind = ""
    sdk_module = ""
    extra = ""
    base_url_env = ""

    def __init__(self, options: APIWorkerOptions) -> None:
        self.options = options
        self.pricing = Pricing(options.model, options.price_in, options.price_out)
        self._client: Any = None
        self._client_key: tuple[int, str] | None = None

    def _base_url(self) -> str | None:
        return self.options.base_url or os.environ.get(self.base_url_env) or None

    @abc.abstractmethod
    def new_client(self, sdk: Any, api_key: str, base_url: str | None) -> Any:
        """The SDK client for this wire format (AsyncOpenAI, AsyncAnthropic)."""

    @abc.abstractmethod
    def conversation(self, client: Any, sdk: Any, ctx: UnitContext, toolbox: Toolbox, timeout: float) -> Any:
        """A ChatAdapter holding one unit's message list in this wire format."""

    def prepare(self) -> None:
        """Import the SDK in the engine's start-up thread, so the first unit does not pay for it."""
        try:
            import_sdk(self.sdk_module, self.extra)
        except InvalidSpec:
            pass  # reported by the first unit

    def _client_for(self, sdk: Any, api_key: str) -> Any:
        """One client per event loop, shared by concurrent units so they share a connection pool."""
        key = (id(asyncio.get_running_loop()), api_key)
        if self._client is None or self._client_key != key:
            self._client = self.new_client(sdk, api_key, self._base_url())
            self._client_key = key
        return self._client

    async def aclose(self) -> None:
        """Close the shared HTTP client (the engine calls it when the job ends)."""
        if self._client is not None:
            client, self._client, self._client_key = self._client, None, None
            await client.close()

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        try:
            sdk = import_sdk(self.sdk_module, self.extra)
        except InvalidSpec as exc:
            return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent, FailureKind.setup)
        api_key = resolve_api_key(self.options, self._base_url())
        if api_key is None:
            return UnitOutcome.failure(missing_key_message(self.options), ErrorClass.permanent, FailureKind.setup)
        client = self._client_for(sdk, api_key)
        timeout = min(ctx.timeout, MAX_REQUEST_TIMEOUT) if ctx.timeout and ctx.timeout > 0 else MAX_REQUEST_TIMEOUT
        return await run_api_unit(ctx, self.options, self.pricing,
                                  lambda toolbox: self.conversation(client, sdk, ctx, toolbox, timeout))
