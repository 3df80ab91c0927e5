"""Anthropic Message Batches as a `BatchProvider`, with the official `anthropic` SDK.

One unit is one `messages.create` body (model, max_tokens, system, temperature from the `anthropic`
worker's options). An output schema is asked for as the online worker asks for it: the loop appends the
JSON instructions to the prompt and validates the answer, so the body carries no schema of its own.
Results are read line by line from the results JSONL the SDK streams. Errors are classified as the
online worker classifies them: an SDK exception becomes a `ModelCallError` (`sdk_error`), and an
errored request of a batch gets the class and kind of the same error over HTTP (its error type stands
for the status: `rate_limit_error` is a 429, and so on).

Adoption. Anthropic batches carry no metadata, and nothing about a batch's requests can be read until
it has ended: `list` shows only ids, times, status and counts. So:

- `submit` appends `_<digest>` (16 hex of sha256(tag)) to every custom_id, and `results` strips it: the
  engine sees only `make_custom_id` ids, while every line of the batch's results names the tag.
- `find(tag, created_after, count)` lists the batches created since `created_after` (less a clock-skew
  margin). A candidate of another size (`count`) is skipped. An ended candidate is ours if the first
  line of its results carries the digest: a batch someone else made cannot, so we never adopt it.
- A candidate still running cannot be verified, and a create sent under the tag can still land until
  the create window has passed since `created_after` (the intent row's time): `create_timeout`, the
  whole create call's deadline, and a quarter of it again for a server still processing a body it
  received whole when its client gave up. In both cases answering "none" could make the loop submit
  the units a second time, so `find` raises `AdoptionPending` instead and the loop asks again later.
  Only when every candidate has been read and the window is closed is "none" the answer; then no batch
  under this tag exists or ever will. The price: after a crash before the create, the units wait out
  the window; after one after it, adoption waits for the batch to end (its results are needed then
  anyway), and at worst for a foreign batch of the same size made in the same minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from agentic_batch.batchapi.provider import (
    AdoptionPending,
    BatchRequest,
    BatchResult,
    BatchState,
    BatchStatus,
    Disposition,
)
from agentic_batch.config import float_env
from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.anthropic_messages import AnthropicOptions
from agentic_batch.workers.base import ErrorClass, FailureKind
from agentic_batch.workers.classify import classify_status, status_kind
from agentic_batch.workers.tool_loop import (
    ModelCallError,
    import_sdk,
    missing_key_message,
    resolve_api_key,
    sdk_error,
)

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
#: What each request adds to its body on the wire (the custom_id with its digest, the JSON around the
#: params): the packing limit the loop sees leaves room for it, 100,000 times over.
_WRAPPER_BYTES = 80
#: Server clocks and ours may disagree by this much when comparing `created_at` to the intent's time.
CLOCK_SKEW_SECONDS = 60.0
#: The create window is this many times the create deadline (see the module doc).
CREATE_WINDOW_FACTOR = 1.25
_DIGEST_LEN = 16
_SUFFIX = re.compile(r"^(.+)_([0-9a-f]{16})$")
_STATES = {"in_progress": BatchState.in_progress, "canceling": BatchState.cancelling, "ended": BatchState.ended}
_RESULT_TYPES = {"succeeded": Disposition.succeeded, "errored": Disposition.errored,
                 "expired": Disposition.expired, "canceled": Disposition.cancelled}
#: The HTTP status each error type of the Messages API comes with, so a batch error is classified as
#: the same error would be online.
_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                 "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                 "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


def tag_digest(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()[:_DIGEST_LEN]


def split_custom_id(wire_id: str) -> tuple[str, str | None]:
    """(the engine's custom_id, the tag digest) of a custom_id as sent; no digest for a foreign one."""
    m = _SUFFIX.match(wire_id)
    return (m.group(1), m.group(2)) if m else (wire_id, None)


class AnthropicBatchProvider:
    """Message Batches for the `anthropic` worker's options. One SDK client per event loop."""

    kind = "anthropic"
    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES - MAX_REQUESTS * _WRAPPER_BYTES

    def __init__(self, options: AnthropicOptions, *, create_timeout: float | None = None,
                 clock_skew: float = CLOCK_SKEW_SECONDS, base_url: str | None = None) -> None:
        self.options = options
        self.sdk = import_sdk("anthropic", "anthropic")
        self.base_url = base_url or options.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        api_key = resolve_api_key(options, self.base_url)
        if api_key is None:
            raise InvalidSpec(missing_key_message(options))
        self._api_key = api_key
        #: The deadline of a whole create call (upload included); the create window follows from it.
        self.create_timeout = (create_timeout if create_timeout is not None
                               else float_env("ABP_BATCH_CREATE_TIMEOUT", 240.0))
        self.clock_skew = clock_skew
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self.sdk.AsyncAnthropic(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                                   timeout=600.0)
            self._loop = loop
        return self._client

    @contextlib.asynccontextmanager
    async def classified(self) -> AsyncIterator[None]:
        """SDK exceptions raised inside become `ModelCallError`s, classified as the online worker does."""
        try:
            yield
        except Exception as exc:
            error = sdk_error(exc, self.sdk, self.sdk.AnthropicError)
            if error is None:
                raise
            raise error from exc

    # --- requests --------------------------------------------------------------------------

    def request_body(self, *, system: str | None, prompt: str, output_schema: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.options.model, "max_tokens": self.options.max_tokens,
                                "messages": [{"role": "user", "content": prompt}]}
        system = system if system is not None else self.options.system_prompt
        if system:
            body["system"] = system
        if self.options.temperature is not None:
            body["temperature"] = min(self.options.temperature, 1.0)  # the API's range is 0..1
        return body

    async def submit(self, requests: Iterable[BatchRequest], *, tag: str) -> str:
        digest = tag_digest(tag)
        wire: list[dict[str, Any]] = []
        size = 0
        for request in requests:
            custom_id = f"{request.custom_id}_{digest}"
            if len(custom_id) > 64:
                raise ValueError(f"custom_id {request.custom_id!r} is too long for the Message Batches API")
            wire.append({"custom_id": custom_id, "params": request.body})
            size += len(json.dumps(request.body)) + _WRAPPER_BYTES
        if not wire or len(wire) > MAX_REQUESTS or size > MAX_BYTES:
            raise ValueError(f"a Message Batch holds 1 to {MAX_REQUESTS} requests and at most {MAX_BYTES} "
                             f"bytes; got {len(wire)} requests, about {size} bytes")
        try:
            async with self.classified(), asyncio.timeout(self.create_timeout):
                batch = await self.client().messages.batches.create(requests=wire, timeout=self.create_timeout)
        except TimeoutError:
            raise ModelCallError(f"batch create timed out after {self.create_timeout:g} s",
                                 ErrorClass.retryable, kind=FailureKind.timeout) from None
        return str(batch.id)

    # --- adoption --------------------------------------------------------------------------

    async def find(self, tag: str, *, created_after: float, count: int | None = None) -> list[str]:
        async with self.classified():
            return await self._find(tag_digest(tag), created_after, count)

    async def _find(self, digest: str, created_after: float, count: int | None) -> list[str]:
        since = created_after - self.clock_skew
        unverified: list[str] = []
        async for batch in self.client().messages.batches.list(limit=100):  # newest first
            if batch.created_at.timestamp() < since:
                break
            if count is not None and _total(batch.request_counts) != count:
                continue
            if batch.processing_status != "ended":
                unverified.append(batch.id)
            elif batch.results_url and await self._first_digest(batch.id) == digest:
                return [str(batch.id)]
        window_left = created_after + self.create_timeout * CREATE_WINDOW_FACTOR - time.time()
        if unverified:
            raise AdoptionPending(f"batches {', '.join(unverified)} may hold these units; they can be told "
                                  "apart only once they end")
        if window_left > 0:
            raise AdoptionPending("a create sent for these units could still land", retry_after=window_left)
        return []

    async def _first_digest(self, provider_id: str) -> str | None:
        stream = await self.client().messages.batches.results(provider_id)
        try:
            async for line in stream:
                return split_custom_id(line.custom_id)[1]
            return None
        finally:
            await stream.close()

    # --- polling and results ---------------------------------------------------------------

    async def status(self, provider_id: str) -> BatchStatus:
        async with self.classified():
            batch = await self.client().messages.batches.retrieve(provider_id)
        rc = batch.request_counts
        counts = {"processing": rc.processing, Disposition.succeeded.value: rc.succeeded,
                  Disposition.errored.value: rc.errored, Disposition.cancelled.value: rc.canceled,
                  Disposition.expired.value: rc.expired, "total": _total(rc)}
        state = _STATES.get(batch.processing_status, BatchState.in_progress)
        return BatchStatus(provider_id=str(batch.id), state=state, counts=counts,
                           provider_status=str(batch.processing_status), created_at=batch.created_at.timestamp())

    async def results(self, provider_id: str) -> AsyncIterator[BatchResult]:
        async with self.classified():
            stream = await self.client().messages.batches.results(provider_id)
            try:
                async for line in stream:
                    yield to_result(line)
            finally:
                await stream.close()

    async def cancel(self, provider_id: str) -> None:
        async with self.classified():
            try:
                await self.client().messages.batches.cancel(provider_id)
            except self.sdk.ConflictError:
                pass  # it has ended already: nothing left to cancel

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await client.close()


def _total(counts: Any) -> int:
    return int(counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired)


def to_result(line: Any) -> BatchResult:
    """One line of the results file (a `MessageBatchIndividualResponse`) as a `BatchResult`."""
    custom_id = split_custom_id(line.custom_id)[0]
    result = line.result
    disposition = _RESULT_TYPES.get(result.type)
    if disposition is None:  # a result type this code does not know: retry it rather than lose it
        return BatchResult(custom_id, Disposition.errored, error=f"unknown batch result type {result.type!r}",
                           error_class=classify_status(500), error_kind=status_kind(500))
    if disposition is Disposition.succeeded:
        message = result.message
        usage = message.usage
        tokens_in = sum(int(getattr(usage, name, 0) or 0) for name in
                        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
        return BatchResult(custom_id, disposition, text=text, raw=message.model_dump(mode="json"),
                           input_tokens=tokens_in, output_tokens=int(usage.output_tokens or 0))
    if disposition is Disposition.errored:
        error = getattr(result.error, "error", None)
        etype = str(getattr(error, "type", "api_error"))
        message_text = str(getattr(error, "message", "") or etype)
        status = _ERROR_STATUS.get(etype, 500)
        text = f"{etype} {message_text}"
        return BatchResult(custom_id, disposition, error=f"batch request errored: {etype}: {message_text}",
                           error_class=classify_status(status, text), error_kind=status_kind(status, text))
    return BatchResult(custom_id, disposition)


def build(options: AnthropicOptions) -> AnthropicBatchProvider:
    """The provider for an `anthropic` job's parsed worker options (see batchapi/registry.py)."""
    return AnthropicBatchProvider(options)
