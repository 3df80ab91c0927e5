"""The Message Batches endpoints of the scripted Anthropic server, with accelerated time.

`ScriptedAnthropicServer` routes `/v1/messages/batches…` here: create, retrieve, list (newest first,
`before_id` / `after_id` / `limit`, `has_more`, `first_id` / `last_id`), cancel, delete and the
results JSONL (streamed, at `results_url`). Each request of a batch is answered by the server's own
responder (`anthropic_scripts`), so one script drives the online and the batch path alike: a
`Reply.error(...)` becomes an `errored` result, a `Reply.hang()` a request that never finishes.

Time is scripted per batch with `BatchTiming`: request i of n "finishes" at `seconds * (i+1)/n` after
creation, the batch ends when the last one does. A batch whose `expire_after` comes first ends then,
its unfinished requests `expired`; a cancel ends it `cancel_seconds` later, its unfinished requests
`canceled`; `seconds=math.inf` is a batch that stays `in_progress`. `create_errors` (e.g. a 429 with
`retry-after`) answer the next creates instead of creating, and `hold_create` creates the batch and
then does not answer for that long: the crash window between a client's create and its recording of
the id. `request_counts` follow the real API: everything `processing` until the batch ends.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any
from urllib.parse import parse_qs

from agentic_batch.testing.anthropic_replies import Reply, message_json
from agentic_batch.testing.anthropic_scripts import MessagesRequest

PREFIX = "/v1/messages/batches"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DAY = 24 * 3600.0
_RESULTS_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BatchTiming:
    """How one batch's time goes, in (accelerated) seconds from its creation."""

    #: Until the last request finishes (math.inf: the batch stays `in_progress`).
    seconds: float = 0.5
    #: When the batch expires (None: never within a test); unfinished requests come back `expired`.
    expire_after: float | None = None
    #: From a cancel to `ended`.
    cancel_seconds: float = 0.2


@dataclass
class ScriptedBatch:
    """One batch as the server keeps it."""

    id: str
    created_at: float
    requests: list[dict[str, Any]]
    timing: BatchTiming
    cancel_at: float | None = None
    ended_at: float | None = None
    deleted: bool = False
    #: custom_id -> result object ({"type": "succeeded", "message": ...} etc.), once ended.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def finish_time(self, index: int) -> float:
        n = len(self.requests)
        return self.created_at + self.timing.seconds * (index + 1) / n

    @property
    def custom_ids(self) -> list[str]:
        return [str(r["custom_id"]) for r in self.requests]


@dataclass(frozen=True)
class Answer:
    """What the HTTP handler sends: a JSON body, or a JSONL stream (`lines`)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    lines: Iterator[bytes] | None = None
    #: Seconds to wait before answering (hold_create), cut short when the server stops.
    hold: float = 0.0


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, etype: str, message: str) -> Answer:
    return Answer(status, {"type": "error", "error": {"type": etype, "message": message}})


class MessageBatches:
    """The batches of one server; thread-safe. `choose` is the server's responder for one request."""

    def __init__(self, choose: Callable[[MessagesRequest], Reply], base_url: Callable[[], str]) -> None:
        self._choose = choose
        self._base_url = base_url
        self._lock = threading.RLock()
        self._batches: dict[str, ScriptedBatch] = {}
        self._order: list[str] = []  # creation order
        self._counter = 0
        #: Timing of batches without a planned one.
        self.default = BatchTiming()
        #: Timings of the next batches, one each, in order.
        self.planned: deque[BatchTiming] = deque()
        #: Replies (errors) to the next creates, one each, instead of creating a batch.
        self.create_errors: deque[Reply] = deque()
        #: Seconds the next create waits after creating the batch before answering (then reset to 0).
        self.hold_create = 0.0
        self.max_requests = MAX_REQUESTS
        self.max_bytes = MAX_BYTES

    # --- what tests look at ------------------------------------------------------------------

    def all(self) -> list[ScriptedBatch]:
        """Every batch created so far (deleted ones too), oldest first, each brought up to date."""
        with self._lock:
            batches = [self._batches[i] for i in self._order]
        for batch in batches:
            self._advance(batch)
        return batches

    def submitted(self) -> Counter[str]:
        """How many times each custom_id was submitted, over all batches: a test of "never twice"."""
        return Counter(cid for batch in self.all() for cid in batch.custom_ids)

    # --- the endpoints -------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Answer:
        route, _, query = path.partition("?")
        parts = route[len(PREFIX):].strip("/").split("/") if route != PREFIX else []
        if method == "POST" and not parts:
            return self._create(body)
        if method == "GET" and not parts:
            return self._list(parse_qs(query))
        batch = self._get(parts[0]) if parts else None
        if batch is None:
            return _error(404, "not_found_error", f"message batch {parts[0] if parts else ''!r} not found")
        if method == "GET" and len(parts) == 1:
            return Answer(200, self._json(batch))
        if method == "DELETE" and len(parts) == 1:
            return self._delete(batch)
        if method == "POST" and parts[1:] == ["cancel"]:
            return self._cancel(batch)
        if method == "GET" and parts[1:] == ["results"]:
            return self._results(batch)
        return _error(404, "not_found_error", f"no route {method} {route}")

    def _create(self, raw: bytes) -> Answer:
        with self._lock:
            if self.create_errors:
                reply = self.create_errors.popleft()
                return Answer(reply.status, reply.error_body(), reply.headers)
        if len(raw) > self.max_bytes:
            return _error(413, "request_too_large", f"request exceeds the maximum size of {self.max_bytes} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "invalid_request_error", "body is not valid JSON")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "invalid_request_error", "requests: must be a non-empty list")
        if len(requests) > self.max_requests:
            return _error(400, "invalid_request_error",
                          f"requests: at most {self.max_requests} requests per batch, got {len(requests)}")
        seen: set[str] = set()
        for index, request in enumerate(requests):
            cid = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                return _error(400, "invalid_request_error",
                              f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if cid in seen:
                return _error(400, "invalid_request_error", f"requests.{index}.custom_id: duplicate {cid!r}")
            if not isinstance(request.get("params"), dict):
                return _error(400, "invalid_request_error", f"requests.{index}.params: must be an object")
            seen.add(cid)
        with self._lock:
            self._counter += 1
            batch_id = f"msgbatch_{self._counter:04d}{random.getrandbits(64):016x}"
            timing = self.planned.popleft() if self.planned else self.default
            batch = ScriptedBatch(batch_id, time.time(), requests, timing)
            self._batches[batch_id] = batch
            self._order.append(batch_id)
            hold, self.hold_create = self.hold_create, 0.0
        return Answer(200, self._json(batch), hold=hold)

    def _list(self, query: dict[str, list[str]]) -> Answer:
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            return _error(400, "invalid_request_error", "limit: must be an integer")
        if not 1 <= limit <= 1000:
            return _error(400, "invalid_request_error", "limit: must be between 1 and 1000")
        with self._lock:
            newest_first = [i for i in reversed(self._order) if not self._batches[i].deleted]
        after, before = query.get("after_id", [None])[0], query.get("before_id", [None])[0]
        if before is not None:  # the page just newer than `before`; has_more: still newer ones
            end = newest_first.index(before) if before in newest_first else 0
            page, has_more = newest_first[max(0, end - limit):end], end - limit > 0
        else:  # the page just older than `after` (or the newest page)
            start = 0 if after is None else len(newest_first)
            if after in newest_first:
                start = newest_first.index(after) + 1
            page, has_more = newest_first[start:start + limit], start + limit < len(newest_first)
        data = []
        for batch_id in page:
            self._advance(self._batches[batch_id])
            data.append(self._json(self._batches[batch_id]))
        return Answer(200, {"data": data, "has_more": has_more,
                            "first_id": page[0] if page else None, "last_id": page[-1] if page else None})

    def _cancel(self, batch: ScriptedBatch) -> Answer:
        self._advance(batch)
        with self._lock:
            if batch.ended_at is not None:
                return _error(409, "invalid_request_error", f"message batch {batch.id} has already ended")
            if batch.cancel_at is None:
                batch.cancel_at = time.time()
        return Answer(200, self._json(batch))

    def _delete(self, batch: ScriptedBatch) -> Answer:
        self._advance(batch)
        with self._lock:
            if batch.ended_at is None:
                return _error(409, "invalid_request_error",
                              f"message batch {batch.id} is still processing; cancel it first")
            batch.deleted = True
        return Answer(200, {"id": batch.id, "type": "message_batch_deleted"})

    def _results(self, batch: ScriptedBatch) -> Answer:
        self._advance(batch)
        if batch.ended_at is None:
            return _error(404, "not_found_error", f"message batch {batch.id} has no results yet: still processing")
        order = batch.custom_ids
        random.Random(batch.id).shuffle(order)  # the real API promises no order either

        def lines() -> Iterator[bytes]:
            chunk = bytearray()
            for cid in order:
                chunk += json.dumps({"custom_id": cid, "result": batch.results[cid]}).encode() + b"\n"
                if len(chunk) >= _RESULTS_CHUNK:
                    yield bytes(chunk)
                    chunk.clear()
            if chunk:
                yield bytes(chunk)

        return Answer(200, headers={"content-type": "application/binary"}, lines=lines())

    # --- time -------------------------------------------------------------------------------

    def _get(self, batch_id: str) -> ScriptedBatch | None:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.deleted:
            return None
        self._advance(batch)
        return batch

    def _advance(self, batch: ScriptedBatch) -> None:
        """End the batch if its time has come: run the requests that finished, mark the rest."""
        now = time.time()
        with self._lock:
            if batch.ended_at is not None:
                return
            ends: list[tuple[float, str]] = [(batch.finish_time(len(batch.requests) - 1), "")]
            if batch.timing.expire_after is not None:
                ends.append((batch.created_at + batch.timing.expire_after, "expired"))
            if batch.cancel_at is not None:
                ends.append((batch.cancel_at + batch.timing.cancel_seconds, "canceled"))
            end, unfinished = min(ends)
            if now < end:
                return
            cutoff = batch.cancel_at if unfinished == "canceled" and batch.cancel_at is not None else end
            results: dict[str, dict[str, Any]] = {}
            for index, request in enumerate(batch.requests):
                if batch.finish_time(index) <= cutoff:
                    results[request["custom_id"]] = self._run(batch, request)
                else:
                    results[request["custom_id"]] = {"type": unfinished or "expired"}
            batch.results = results
            batch.ended_at = end

    def _run(self, batch: ScriptedBatch, request: dict[str, Any]) -> dict[str, Any]:
        """One request's result, from the server's responder, as the results file carries it."""
        params = request["params"]
        missing = [name for name in ("model", "max_tokens", "messages") if name not in params]
        if missing:
            return _errored("invalid_request_error", f"{missing[0]}: Field required")
        req = MessagesRequest(method="POST", path="/v1/messages", headers={"x-batch-id": batch.id}, body=params)
        reply = self._choose(req)
        if reply.kind == "error":
            return _errored(reply.error_type, reply.message)
        if reply.kind == "hang":  # never finished within the batch's window
            return {"type": "expired"}
        if reply.kind == "malformed":
            return _errored("api_error", "Internal server error")
        return {"type": "succeeded", "message": message_json(reply, str(params.get("model") or ""))}

    def _json(self, batch: ScriptedBatch) -> dict[str, Any]:
        """The MessageBatch object, as `retrieve` returns it."""
        with self._lock:
            ended = batch.ended_at is not None
            counts = Counter(r["type"] for r in batch.results.values()) if ended else Counter()
            expire_after = batch.timing.expire_after if batch.timing.expire_after is not None else _DAY
            status = "ended" if ended else "canceling" if batch.cancel_at is not None else "in_progress"
            return {
                "id": batch.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": {
                    "processing": 0 if ended else len(batch.requests),
                    "succeeded": counts["succeeded"],
                    "errored": counts["errored"],
                    "canceled": counts["canceled"],
                    "expired": counts["expired"],
                },
                "created_at": _rfc3339(batch.created_at),
                "expires_at": _rfc3339(batch.created_at + expire_after),
                "ended_at": _rfc3339(batch.ended_at),
                "cancel_initiated_at": _rfc3339(batch.cancel_at),
                "archived_at": None,
                "results_url": f"{self._base_url()}{PREFIX}/{batch.id}/results" if ended else None,
            }


def _errored(etype: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": etype, "message": message}}}
