"""The contract between the engine's batch loop and one provider's batch API.

The engine owns the store side (intent rows, leases, adoption, retries, cost); a provider only speaks
its API. Splitting it here lets both providers be driven by one loop and one set of crash tests: the
loop writes an intent row naming the units and a `tag`, calls `submit`, and records the provider id.
After a crash between the two, `find(tag)` returns the batch the provider made, so it is adopted, not
submitted twice.

`custom_id` names the unit and the attempt (`make_custom_id`), so a result is applied to the attempt
that asked for it and a late result of an older attempt is refused by the store's fence as usual.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agentic_batch.workers.base import ErrorClass, FailureKind


class BatchState(StrEnum):
    """A provider batch's life, in one vocabulary for both providers."""

    #: Accepted, not yet running (OpenAI `validating`).
    validating = "validating"
    #: Requests are being processed (OpenAI `in_progress`/`finalizing`, Anthropic `in_progress`).
    in_progress = "in_progress"
    #: Cancel asked, not finished (OpenAI `cancelling`, Anthropic `canceling`).
    cancelling = "cancelling"
    #: Done: results can be read (OpenAI `completed`/`expired`/`cancelled`, Anthropic `ended`). Requests the
    #: provider did not run carry the disposition `expired` or `cancelled` in their results.
    ended = "ended"
    #: The provider refused the batch as a whole (OpenAI `failed`: bad input file); no results.
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (BatchState.ended, BatchState.failed)


class Disposition(StrEnum):
    """What became of one request of a batch."""

    succeeded = "succeeded"
    #: The request failed: the unit's retry policy applies (`error_class`).
    errored = "errored"
    #: The provider did not get to it in its window: back to pending, no retry spent.
    expired = "expired"
    #: Cancelled with its batch: back to pending (or cancelled with the job), no retry spent.
    cancelled = "cancelled"


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: `body` is the provider's own request body (what `chat.completions.create`
    or `messages.create` would take, without the transport options)."""

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BatchStatus:
    provider_id: str
    state: BatchState
    #: Counts as the provider reports them: keys from `Disposition` plus `processing` and `total`.
    counts: dict[str, int] = field(default_factory=dict)
    #: The provider's own status word (shown to users as is).
    provider_status: str = ""
    created_at: float | None = None
    #: Why the batch failed as a whole (state `failed`).
    error: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """One request's result, read from the provider's results file."""

    custom_id: str
    disposition: Disposition
    #: The model's text answer (succeeded).
    text: str | None = None
    #: The raw response body, for the unit's record.
    raw: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: For `errored`: the message and its classification, as the online worker would give them.
    error: str | None = None
    error_class: ErrorClass | None = None
    error_kind: FailureKind | None = None


class AdoptionPending(Exception):
    """`find` saw a batch that may be the one submitted under the tag but cannot tell yet, or a create
    sent under it might still land. Answering "none" then could submit the units twice, so the loop keeps
    the intent's units leased to it and asks again after `retry_after` seconds.

    Anthropic raises it for candidates still running (only an ended batch's results show its custom
    ids) and until the create's own timeout has passed since the intent was written.
    """

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatchProvider(Protocol):
    """One provider's batch API. Methods are async and raise `ModelCallError` (workers/tool_loop.py),
    classified as the online worker classifies (`sdk_error`): the loop decides from its class and kind
    (a refusal such as 429 on create releases the units; a timeout or 5xx may have created the batch, so
    the loop looks for it with `find` before submitting again). `max_requests` and `max_bytes` say how the
    loop must pack requests. The provider module exposes `build(options)` (see batchapi/registry.py)."""

    kind: str
    #: At most this many requests and bytes (of the serialized requests) in one batch.
    max_requests: int
    max_bytes: int

    def request_body(self, *, system: str | None, prompt: str, output_schema: dict[str, Any] | None) -> dict[str, Any]:
        """The provider's request body for one unit (model and sampling options from the worker options)."""
        ...

    async def submit(self, requests: Iterable[BatchRequest], *, tag: str) -> str:
        """Create a batch of `requests`, labelled with `tag` where the provider keeps labels; return its id."""
        ...

    async def find(self, tag: str, *, created_after: float, count: int | None = None) -> list[str]:
        """Ids of batches created since `created_after` (epoch seconds) that carry `tag`: the adoption path
        after a crash between `submit` and recording its id. `count` (the intent's number of requests) lets
        a provider skip batches of another size unread. Raises `AdoptionPending` when it cannot answer yet."""
        ...

    async def status(self, provider_id: str) -> BatchStatus: ...

    def results(self, provider_id: str) -> AsyncIterator[BatchResult]:
        """The batch's results, streamed (never the whole file in memory)."""
        ...

    async def cancel(self, provider_id: str) -> None: ...

    async def aclose(self) -> None: ...


_CUSTOM_ID = re.compile(r"^u(\d+)-a(\d+)$")


def make_custom_id(unit_id: int, attempt: int) -> str:
    """`u<unit id>-a<attempt>`: both providers allow [A-Za-z0-9_-], up to 64 characters."""
    return f"u{unit_id}-a{attempt}"


def parse_custom_id(custom_id: str) -> tuple[int, int] | None:
    """(unit id, attempt) of a custom id this product made, or None for anything else."""
    m = _CUSTOM_ID.match(custom_id)
    return (int(m.group(1)), int(m.group(2))) if m else None
