"""Scripted OpenAI Files + Batches endpoints on 127.0.0.1, in accelerated time, for tests and benchmarks.

`ScriptedOpenAIBatchServer` is the chat-completions server of `openai_server` (so a job that falls back
to the online path talks to the same place) plus:

- `POST /v1/files` (multipart, `purpose=batch`) and `GET /v1/files/{id}/content`;
- `POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches` (newest first, `limit`/`after` pages,
  `metadata` kept), `POST /v1/batches/{id}/cancel`.

A batch moves `validating -> in_progress -> finalizing -> completed` after `validating_s`,
`in_progress_s` and `finalizing_s` seconds, computed from the clock whenever it is read (no thread).
When it completes, the responder answers each request line (the same `Request -> Reply` as the
online server): text replies go to the output file, error replies to the error file (partial failures).
`expire=True` ends batches `expired` after their in-progress time with only the first
`expire_completes` requests run (the rest land in the error file with code `batch_expired`);
`stuck=True` keeps batches `in_progress` until cancelled; `create_429=N` answers the next N creates
with 429; `cut_downloads=N` cuts the next N file downloads half-way. `creates` records every
accepted batch, so a test can check no unit was submitted twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from agentic_batch.testing.lifecycle import serve_until_stopped
from agentic_batch.testing.openai_server import (
    Reply,
    Request,
    Responder,
    ScriptedOpenAIServer,
    _error_type,
    _estimate_usage,
    _Handler,
    echo_responder,
)

__all__ = ["BatchRecord", "ScriptedOpenAIBatchServer"]


@dataclass
class BatchRecord:
    """One batch the server accepted."""

    id: str
    input_file_id: str
    metadata: dict[str, str]
    custom_ids: list[str]
    created_at: float
    endpoint: str
    status: str = "validating"
    cancelled_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    failed_reason: str | None = None


class ScriptedOpenAIBatchServer(ScriptedOpenAIServer):
    """The chat server plus the Files and Batches endpoints; see the module docstring."""

    def __init__(self, responder: Responder | Iterable[Reply] = echo_responder, *, validating_s: float = 0.1,
                 in_progress_s: float = 0.3, finalizing_s: float = 0.1, expire: bool = False,
                 expire_completes: int = 0, stuck: bool = False, create_429: int = 0, cut_downloads: int = 0,
                 keep_requests: bool = True, **kwargs: Any) -> None:
        super().__init__(responder, keep_requests=keep_requests, **kwargs)
        self.validating_s, self.in_progress_s, self.finalizing_s = validating_s, in_progress_s, finalizing_s
        self.expire, self.expire_completes, self.stuck = expire, expire_completes, stuck
        self.create_429 = create_429
        #: The next N file downloads stop half-way (the connection closes early, as a dropped stream does).
        self.cut_downloads = cut_downloads
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (purpose, content)
        self.batches: dict[str, BatchRecord] = {}
        #: Every accepted create, in order (a batch refused with 429 is not in it).
        self.creates: list[BatchRecord] = []
        self.create_attempts = 0
        self.cancels: list[str] = []
        self._file_ids = itertools.count(1)
        self._batch_ids = itertools.count(1)

    def start(self) -> Self:
        handler = type("_BoundBatchHandler", (_BatchHandler,), {"server_ref": self})
        self._start_with(handler)
        return self

    # --- files -----------------------------------------------------------------------------------

    def add_file(self, purpose: str, content: bytes) -> dict[str, Any]:
        with self._lock:
            return self._add_file(purpose, content)

    def _add_file(self, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = f"file-{next(self._file_ids)}"
        self.files[file_id] = (purpose, content)
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": purpose, "status": "processed"}

    # --- batches ---------------------------------------------------------------------------------

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.create_attempts += 1
            if self.create_429 > 0:
                self.create_429 -= 1
                return 429, {"error": {"message": "Rate limit reached for batch creation", "type": "requests",
                                       "param": None, "code": "rate_limit_exceeded"}}
            file = self.files.get(str(body.get("input_file_id")))
            if file is None or file[0] != "batch":
                return 400, {"error": {"message": "input_file_id is not a batch file", "type": "invalid_request_error",
                                       "param": "input_file_id", "code": None}}
            lines = [json.loads(line) for line in file[1].splitlines() if line.strip()]
            record = BatchRecord(id=f"batch_{next(self._batch_ids)}", input_file_id=str(body["input_file_id"]),
                                 metadata=dict(body.get("metadata") or {}),
                                 custom_ids=[str(line.get("custom_id")) for line in lines], created_at=time.time(),
                                 endpoint=str(body.get("endpoint")))
            record.counts["total"] = len(lines)
            if len(set(record.custom_ids)) != len(lines):
                record.status, record.failed_reason = "failed", "duplicate custom_id in the input file"
            self.batches[record.id] = record
            self.creates.append(record)
            return 200, self._view(record)

    def cancel_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            record = self.batches.get(batch_id)
            if record is None:
                return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
            self._advance(record)
            self.cancels.append(batch_id)
            if record.status in ("validating", "in_progress", "finalizing"):
                record.status, record.cancelled_at = "cancelling", time.time()
            return 200, self._view(record)

    def get_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            record = self.batches.get(batch_id)
            if record is None:
                return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
            self._advance(record)
            return 200, self._view(record)

    def list_batches(self, limit: int, after: str | None) -> dict[str, Any]:
        with self._lock:
            ordered = sorted(self.batches.values(), key=lambda b: int(b.id.split("_")[1]), reverse=True)
            if after is not None:
                ids = [b.id for b in ordered]
                ordered = ordered[ids.index(after) + 1:] if after in ids else []
            page = ordered[:limit]
            for record in page:
                self._advance(record)
            data = [self._view(b) for b in page]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}

    def _advance(self, record: BatchRecord) -> None:
        """Move the batch along the clock; run its requests when it ends. Called under the lock."""
        now = time.time()
        if record.status == "cancelling":
            if now - (record.cancelled_at or now) >= self.finalizing_s:
                record.status = "cancelled"
                self._finish(record, run=0, missing_code=None)
            return
        if record.status not in ("validating", "in_progress", "finalizing"):
            return
        age = now - record.created_at
        if age < self.validating_s:
            return
        record.status = "in_progress"
        if self.stuck or age < self.validating_s + self.in_progress_s:
            return
        if self.expire:
            record.status = "expired"
            self._finish(record, run=self.expire_completes, missing_code="batch_expired")
            return
        record.status = "finalizing"
        if age < self.validating_s + self.in_progress_s + self.finalizing_s:
            return
        record.status = "completed"
        self._finish(record, run=len(record.custom_ids), missing_code=None)

    def _finish(self, record: BatchRecord, *, run: int, missing_code: str | None) -> None:
        """Answer the first `run` requests through the responder; the rest get `missing_code` error lines
        (or no line at all when None: a cancelled batch's requests that never ran)."""
        output: list[bytes] = []
        errors: list[bytes] = []
        lines = [json.loads(line) for line in self.files[record.input_file_id][1].splitlines() if line.strip()]
        for i, line in enumerate(lines):
            custom_id, request_id = line.get("custom_id"), f"req_{self.next_id()}"
            if i >= run:
                if missing_code is not None:
                    message = ("This request could not be executed before the completion window expired."
                               if missing_code == "batch_expired" else "The batch was cancelled.")
                    errors.append(_line({"id": f"batch_req_{self.next_id()}", "custom_id": custom_id,
                                         "response": None, "error": {"code": missing_code, "message": message}}))
                    record.counts["failed"] += 1
                continue
            request = Request("POST", str(line.get("url")), {}, dict(line.get("body") or {}))
            request.number = self.request_count = self.request_count + 1
            if self.keep_requests:
                self.requests.append(request)
            reply = self.responder(request)
            status, body = _reply_body(self, request, reply)
            entry = {"id": f"batch_req_{self.next_id()}", "custom_id": custom_id,
                     "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None}
            (output if status == 200 else errors).append(_line(entry))
            record.counts["completed" if status == 200 else "failed"] += 1
        if output:
            record.output_file_id = self._add_file("batch_output", b"".join(output))["id"]
        if errors:
            record.error_file_id = self._add_file("batch_output", b"".join(errors))["id"]

    @staticmethod
    def _view(record: BatchRecord) -> dict[str, Any]:
        return {"id": record.id, "object": "batch", "endpoint": record.endpoint, "errors": (
                    {"object": "list", "data": [{"code": "invalid_input", "message": record.failed_reason}]}
                    if record.failed_reason else None),
                "input_file_id": record.input_file_id, "completion_window": "24h", "status": record.status,
                "output_file_id": record.output_file_id, "error_file_id": record.error_file_id,
                "created_at": int(record.created_at), "cancelled_at": (int(record.cancelled_at)
                                                                      if record.cancelled_at else None),
                "request_counts": dict(record.counts), "metadata": record.metadata}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _reply_body(server: ScriptedOpenAIBatchServer, request: Request, reply: Reply) -> tuple[int, dict[str, Any]]:
    """A Reply as the (status, body) one line of a results file holds."""
    if reply.kind == "error":
        return reply.status, {"error": {"message": reply.message, "type": reply.error_type or _error_type(reply.status),
                                        "param": None, "code": reply.error_code}}
    if reply.kind in ("hang", "malformed"):
        return 500, {"error": {"message": "The server had an error processing your request.",
                               "type": "server_error", "param": None, "code": None}}
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.kind == "tool_calls":
        message["tool_calls"] = [{"id": f"call_{server.next_id()}", "type": "function",
                                  "function": {"name": name, "arguments": json.dumps(args)}}
                                 for name, args in reply.calls]
    prompt_tokens, completion_tokens = reply.usage or _estimate_usage(request, message)
    return 200, {"id": f"chatcmpl-{server.next_id()}", "object": "chat.completion", "created": int(time.time()),
                 "model": request.model or "scripted",
                 "choices": [{"index": 0, "message": message, "logprobs": None,
                              "finish_reason": "tool_calls" if reply.kind == "tool_calls" else "stop"}],
                 "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens}}


class _BatchHandler(_Handler):
    server_ref: ScriptedOpenAIBatchServer

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["v1"]:
            parts = parts[1:]
        return parts, parse_qs(url.query)

    def do_GET(self) -> None:
        parts, query = self._route()
        server = self.server_ref
        if parts[:1] == ["files"] and len(parts) == 3 and parts[2] == "content":
            file = server.files.get(parts[1])
            if file is None:
                self._send_json(404, {"error": {"message": f"no file {parts[1]}", "type": "invalid_request_error"}})
            elif server.cut_downloads > 0:
                server.cut_downloads -= 1
                self.send_response(200)
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(len(file[1])))
                self.end_headers()
                self.wfile.write(file[1][:len(file[1]) // 2])
                self.close_connection = True
            else:
                self._send_raw(200, file[1], "application/octet-stream")
        elif parts == ["batches"]:
            limit = int((query.get("limit") or ["20"])[0])
            after = query.get("after")
            self._send_json(200, server.list_batches(limit, after[0] if after else None))
        elif parts[:1] == ["batches"] and len(parts) == 2:
            self._send_json(*server.get_batch(parts[1]))
        else:
            super().do_GET()

    def do_POST(self) -> None:
        parts, _ = self._route()
        if parts[:1] not in (["files"], ["batches"]):
            super().do_POST()
            return
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        server = self.server_ref
        if parts == ["files"]:
            purpose, content = _multipart(self.headers.get("content-type", ""), raw)
            if content is None:
                self._send_json(400, {"error": {"message": "no file part", "type": "invalid_request_error"}})
            else:
                self._send_json(200, server.add_file(purpose or "", content))
        elif parts == ["batches"]:
            self._send_json(*server.create_batch(json.loads(raw or b"{}")))
        elif len(parts) == 3 and parts[2] == "cancel":
            self._send_json(*server.cancel_batch(parts[1]))
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})


def _multipart(content_type: str, raw: bytes) -> tuple[str | None, bytes | None]:
    """(purpose, file content) of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + content_type.encode() + b"\r\n\r\n" + raw)
    purpose: str | None = None
    content: bytes | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "purpose":
            purpose = data.decode()
        elif name == "file":
            content = data
    return purpose, content


def main(argv: list[str] | None = None) -> None:
    """`python -m agentic_batch.testing.openai_batches --port 0 --in-progress 2 --pad 2000`: prints its URL,
    serves until SIGTERM, then prints how many batches and requests it saw."""
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--validating", type=float, default=0.1, help="seconds a batch stays validating")
    parser.add_argument("--in-progress", type=float, default=0.3, help="seconds a batch stays in_progress")
    parser.add_argument("--finalizing", type=float, default=0.1, help="seconds a batch stays finalizing")
    parser.add_argument("--pad", type=int, default=0, help="characters of padding in every answer")
    args = parser.parse_args(argv)
    pad = "x" * args.pad

    def responder(request: Request) -> Reply:
        return Reply.text(f"echo: {request.first_user_text}{pad}")

    server = ScriptedOpenAIBatchServer(responder, validating_s=args.validating, in_progress_s=args.in_progress,
                                       finalizing_s=args.finalizing, host=args.host, port=args.port,
                                       keep_requests=False)
    server.start()
    serve_until_stopped(server, server.url, lambda: f"batches={len(server.creates)} requests={server.request_count}")


if __name__ == "__main__":
    main()
