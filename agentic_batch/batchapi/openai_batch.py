"""OpenAI Batch: the `BatchProvider` of the `openai` worker, with the official `openai` SDK.

A batch is a JSONL file of `/v1/chat/completions` requests uploaded through the Files API
(`purpose=batch`), then `batches.create` with a 24 h window and `metadata={"abp_tag": tag}` (the tag is
how `find` recognises a batch whose id a crash kept us from recording). Results come in two files
(the output file for answered requests, the error file for failed, expired or cancelled ones), read
line by line from a streamed response, so a 50,000-line result never sits in memory.

Every SDK failure is raised as a `ModelCallError`, classified exactly as the online worker does
(`sdk_error`); one request's failure is classified the same way from its status and body.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from typing import Any

from agentic_batch.batchapi.provider import BatchRequest, BatchResult, BatchState, BatchStatus, Disposition
from agentic_batch.workers.api_worker import MAX_REQUEST_TIMEOUT
from agentic_batch.workers.base import ErrorClass, FailureKind
from agentic_batch.workers.classify import classify_status, status_kind
from agentic_batch.workers.openai_chat import _COMPLETION_TOKENS_MODELS, OpenAIOptions
from agentic_batch.workers.tool_loop import (
    ModelCallError,
    import_sdk,
    missing_key_message,
    resolve_api_key,
    sdk_error,
)

ENDPOINT = "/v1/chat/completions"

#: OpenAI's status words in the product's vocabulary.
_STATES = {"validating": BatchState.validating, "in_progress": BatchState.in_progress,
           "finalizing": BatchState.in_progress, "cancelling": BatchState.cancelling,
           "completed": BatchState.ended, "expired": BatchState.ended, "cancelled": BatchState.ended,
           "failed": BatchState.failed}

#: Error-file codes for requests the batch never ran.
_NOT_RUN = {"batch_expired": Disposition.expired, "batch_cancelled": Disposition.cancelled}

#: How far back `find` looks before the intent row's time (the provider's clock and ours differ).
CLOCK_SLACK = 600.0


class OpenAIBatchProvider:
    kind = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self._client: Any = None
        self._sdk: Any = None

    # --- requests --------------------------------------------------------------------------------

    def request_body(self, *, system: str | None, prompt: str, output_schema: dict[str, Any] | None) -> dict[str, Any]:
        """What `chat.completions.create` would take for this unit; the schema as `response_format`
        json_schema (not strict: a user's schema need not meet strict mode's rules; the engine validates)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": self.options.model, "messages": messages}
        if self.options.temperature is not None:
            body["temperature"] = self.options.temperature
        if self.options.max_tokens is not None:
            name = self.options.model.rsplit("/", 1)[-1]
            body["max_completion_tokens" if name.startswith(_COMPLETION_TOKENS_MODELS) else "max_tokens"] = (
                self.options.max_tokens)
        if output_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "unit_output", "schema": output_schema, "strict": False}}
        return body

    # --- the API ---------------------------------------------------------------------------------

    def _api(self) -> Any:
        if self._client is None:
            self._sdk = import_sdk("openai", "openai")
            base_url = self.options.base_url or os.environ.get("OPENAI_BASE_URL") or None
            api_key = resolve_api_key(self.options, base_url)
            if api_key is None:
                raise ModelCallError(missing_key_message(self.options), ErrorClass.permanent, kind=FailureKind.setup)
            self._client = self._sdk.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0,
                                                 timeout=MAX_REQUEST_TIMEOUT)
        return self._client

    def _classified(self, exc: Exception) -> Exception:
        error = sdk_error(exc, self._sdk, self._sdk.OpenAIError) if self._sdk is not None else None
        return error if error is not None else exc

    async def submit(self, requests: Iterable[BatchRequest], *, tag: str) -> str:
        client = self._api()
        # spooled: small batches stay in memory, a 200 MB one goes to a temporary file
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            for request in requests:
                spool.write(json.dumps({"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT,
                                        "body": request.body}, ensure_ascii=False).encode() + b"\n")
            spool.seek(0)
            try:
                uploaded = await client.files.create(file=(f"{tag}.jsonl", spool), purpose="batch")
                batch = await client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                                    completion_window="24h", metadata={"abp_tag": tag})
            except Exception as exc:
                raise self._classified(exc) from exc
        return str(batch.id)

    async def find(self, tag: str, *, created_after: float, count: int | None = None) -> list[str]:
        client = self._api()
        found: list[str] = []
        try:
            async for batch in client.batches.list(limit=100):  # newest first: stop at the older ones
                if batch.created_at < created_after - CLOCK_SLACK:
                    break
                if (batch.metadata or {}).get("abp_tag") == tag:
                    found.append(str(batch.id))
        except Exception as exc:
            raise self._classified(exc) from exc
        return found

    async def _retrieve(self, provider_id: str) -> Any:
        try:
            return await self._api().batches.retrieve(provider_id)
        except Exception as exc:
            raise self._classified(exc) from exc

    async def status(self, provider_id: str) -> BatchStatus:
        batch = await self._retrieve(provider_id)
        counts = batch.request_counts
        done, failed, total = (int(counts.completed), int(counts.failed), int(counts.total)) if counts else (0, 0, 0)
        errors = [e.message or e.code or "" for e in (batch.errors.data or [])] if batch.errors else []
        return BatchStatus(provider_id=provider_id, state=_STATES.get(batch.status, BatchState.in_progress),
                           counts={"succeeded": done, "errored": failed, "total": total,
                                   "processing": max(0, total - done - failed)},
                           provider_status=str(batch.status), created_at=float(batch.created_at),
                           error="; ".join(e for e in errors if e) or None)

    async def results(self, provider_id: str) -> AsyncIterator[BatchResult]:
        batch = await self._retrieve(provider_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                async with self._api().files.with_streaming_response.content(file_id) as response:
                    async for line in response.iter_lines():
                        if line.strip():
                            yield parse_result_line(line)
            except ModelCallError:
                raise
            except Exception as exc:
                raise self._classified(exc) from exc

    async def cancel(self, provider_id: str) -> None:
        try:
            await self._api().batches.cancel(provider_id)
        except Exception as exc:
            error = self._classified(exc)
            # already finished (409/400 "cannot be cancelled"): nothing left to cancel
            if isinstance(error, ModelCallError) and error.kind is FailureKind.bad_request:
                return
            raise error from exc

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def parse_result_line(line: str) -> BatchResult:
    """One line of an output or error file, in the contract's terms."""
    try:
        entry = json.loads(line)
        custom_id = str(entry.get("custom_id"))
    except (ValueError, AttributeError) as exc:
        return BatchResult(custom_id="", disposition=Disposition.errored, error=f"unreadable result line: {exc}",
                           error_class=ErrorClass.retryable, error_kind=FailureKind.malformed_response)
    error = entry.get("error")
    if error:  # not run at all (expired, cancelled) or refused before running
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
        if code in _NOT_RUN:
            return BatchResult(custom_id=custom_id, disposition=_NOT_RUN[code], error=message or code)
        return BatchResult(custom_id=custom_id, disposition=Disposition.errored, error=f"{code}: {message}",
                           error_class=classify_status(None, message) if not code else ErrorClass.permanent,
                           error_kind=FailureKind.bad_request)
    response = entry.get("response") or {}
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    if status != 200:
        detail: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        text = f"{detail.get('message', '')} {json.dumps(body, default=str)}"
        return BatchResult(custom_id=custom_id, disposition=Disposition.errored, raw=body,
                           error=f"HTTP {status}: {detail.get('message') or 'request failed'}",
                           error_class=classify_status(status, text), error_kind=status_kind(status, text))
    try:
        message = body["choices"][0]["message"]
        text_out = message.get("content") or message.get("refusal") or ""
    except (KeyError, IndexError, TypeError):
        return BatchResult(custom_id=custom_id, disposition=Disposition.errored, raw=body,
                           error="malformed response from the model API: no choices",
                           error_class=ErrorClass.retryable, error_kind=FailureKind.malformed_response)
    usage = body.get("usage") or {}
    return BatchResult(custom_id=custom_id, disposition=Disposition.succeeded, text=text_out, raw=body,
                       input_tokens=int(usage.get("prompt_tokens") or 0),
                       output_tokens=int(usage.get("completion_tokens") or 0))


def build(options: OpenAIOptions) -> OpenAIBatchProvider:
    return OpenAIBatchProvider(options)
