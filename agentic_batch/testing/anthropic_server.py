"""A scripted Anthropic Messages API server on 127.0.0.1, for tests and benchmarks.

The real Claude Code CLI (bundled in the claude-agent-sdk wheel) talks to whatever
`ANTHROPIC_BASE_URL` names. Pointing it here lets tests run the real agent loop, with real Write /
Read / Bash tools executed in a real workspace, but with model turns we script: text, `tool_use`
blocks, thinking, HTTP errors with `retry-after`, hangs and malformed bodies, each with optional
latency. It speaks `POST /v1/messages` as SSE (`stream: true`) or plain JSON,
`POST /v1/messages/count_tokens`, and the Message Batches endpoints (`anthropic_batches`, answered by
the same responder, with accelerated time); anything else gets a harmless JSON answer.

A responder is a function of the parsed request (see `anthropic_scripts`); replies are built with
`Reply` (see `anthropic_replies`). Stdlib only, so the fixture costs nothing to import and works
wherever the package does; a thread per connection, with a deep listen backlog, serves a hundred
concurrent streaming clients.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from agentic_batch.testing.anthropic_batches import PREFIX as BATCHES, Answer, BatchTiming, MessageBatches
from agentic_batch.testing.anthropic_replies import Reply, message_json, sse_events
from agentic_batch.testing.anthropic_scripts import (
    MessagesRequest,
    Responder,
    ScriptedConversation,
    echo_responder,
    scripted,
    write_file_responder,
)
from agentic_batch.testing.lifecycle import ServerLifecycle, serve_until_stopped

__all__ = [
    "BatchTiming",
    "MessagesRequest",
    "Reply",
    "Responder",
    "ScriptedAnthropicServer",
    "ScriptedConversation",
    "echo_responder",
    "scripted",
    "write_file_responder",
]

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, body: bytes) -> MessagesRequest:
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {"_unparsed": body[:1000].decode(errors="replace")}
        req = MessagesRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=parsed if isinstance(parsed, dict) else {"_body": parsed},
        )
        self.server.owner._record(req)
        return req

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        req = self._record(b"")
        if req.route.startswith(BATCHES):
            self._answer_batches(req, b"")
            return
        self._send_json(200, {"data": [], "has_more": False})

    def do_DELETE(self) -> None:
        req = self._record(b"")
        if req.route.startswith(BATCHES):
            self._answer_batches(req, b"")
            return
        self._send_json(404, Reply.error(404).error_body())

    def do_HEAD(self) -> None:
        self._record(b"")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        raw = self._read_body()
        req = self._record(raw)
        try:
            if req.route.startswith(BATCHES):
                self._answer_batches(req, raw)
            elif req.route == "/v1/messages/count_tokens":
                self._send_json(200, {"input_tokens": max(1, len(json.dumps(req.body)) // 4)})
            elif req.route == "/v1/messages":
                self._answer_messages(req)
            else:
                self._send_json(200, {})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _answer_batches(self, req: MessagesRequest, raw: bytes) -> None:
        try:
            self._send_batches_answer(req, raw)
        except (BrokenPipeError, ConnectionResetError):  # a client that read one line and closed
            self.close_connection = True

    def _send_batches_answer(self, req: MessagesRequest, raw: bytes) -> None:
        owner = self.server.owner
        answer: Answer = owner.batches.handle(req.method, req.path, raw)
        if answer.hold and owner._stopping.wait(answer.hold):
            self.close_connection = True
            return
        if answer.lines is None:
            self._send_json(answer.status, answer.body, answer.headers)
            return
        self.send_response(answer.status)  # the results JSONL, streamed in chunks
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in answer.lines:
            self._chunk(chunk)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _answer_messages(self, req: MessagesRequest) -> None:
        owner = self.server.owner
        reply = owner._choose(req)
        delay = reply.latency if reply.latency is not None else owner.latency
        if delay and owner._stopping.wait(delay):
            return
        if reply.kind == "hang" and not reply.after_start:
            owner._stopping.wait(reply.seconds)
            self.close_connection = True
            return
        if reply.kind == "error":
            self._send_json(reply.status, reply.error_body(), reply.headers)
            return
        if not req.stream:
            if reply.kind == "malformed":
                data = b'{"id": "msg_broken", "content": [ {"type": "text", "te'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self._send_json(200, message_json(reply, req.model), reply.headers)
            return
        self._stream(req, reply)

    def _stream(self, req: MessagesRequest, reply: Reply) -> None:
        """SSE over chunked transfer encoding, so the connection can be reused afterwards."""
        owner = self.server.owner
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in _events_for(reply, req.model):
            if chunk is None:  # a stall point inside the stream
                owner._stopping.wait(reply.seconds)
                self.close_connection = True
                return
            self._chunk(chunk)
            if reply.stream_delay and owner._stopping.wait(reply.stream_delay):
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _events_for(reply: Reply, model: str) -> Iterator[bytes | None]:
    if reply.kind == "malformed":
        yield b"event: message_start\ndata: {this is not json\n\n"
        return
    events = sse_events(reply, model)
    if reply.kind == "hang":  # after_start: send message_start, then stall
        yield events[0]
        yield None
        return
    yield from events


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A benchmark opens ~100 connections at once; the default backlog of 5 would make the kernel
    # drop SYNs and add whole seconds of client retry delay.
    request_queue_size = 1024
    owner: ScriptedAnthropicServer


class ScriptedAnthropicServer(ServerLifecycle):
    """The server. `start()` it (or use `with`), point `ANTHROPIC_BASE_URL` at `.url`."""

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        self.responder = responder
        self.latency = latency
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._requests: list[MessagesRequest] = []
        #: The Message Batches endpoints' state: timings, scripted create errors, the batches made.
        self.batches = MessageBatches(self._choose, lambda: self.url)
        self._attempts: dict[tuple[str, int, str], int] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.root_url

    @property
    def requests(self) -> list[MessagesRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = "/v1/messages") -> int:
        """Requests received on `path` (query string ignored); `path=None` counts all of them."""
        with self._lock:
            return sum(1 for r in self._requests if path is None or r.route == path)

    def message_requests(self) -> list[MessagesRequest]:
        return [r for r in self.requests if r.route == "/v1/messages"]

    def start(self) -> Self:
        self._stopping.clear()
        self._httpd = _HTTPServer((self._host, self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-anthropic",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self


    def _record(self, req: MessagesRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _choose(self, req: MessagesRequest) -> Reply:
        try:
            chosen = self.responder(req)
        except Exception as exc:
            return Reply.error(500, "api_error", f"responder raised {type(exc).__name__}: {exc}")
        if isinstance(chosen, Reply):
            return chosen
        replies = list(chosen)
        key = (req.first_user_text, req.turn, req.model)
        with self._lock:
            n = self._attempts.get(key, 0)
            self._attempts[key] = n + 1
        return replies[min(n, len(replies) - 1)]


_SCENARIOS: dict[str, Responder] = {"echo": echo_responder, "write-file": write_file_responder}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m agentic_batch.testing.anthropic_server --port N`: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--scenario", choices=sorted(_SCENARIOS), default="echo")
    parser.add_argument("--batch-seconds", type=float, default=0.5,
                        help="seconds from a message batch's creation to its end")
    parser.add_argument("--pad", type=int, default=0,
                        help="characters of padding in every text answer (big results files for benchmarks)")
    args = parser.parse_args(argv)
    base = _SCENARIOS[args.scenario]

    def responder(req: MessagesRequest) -> Reply | Sequence[Reply]:
        chosen = base(req)
        if not isinstance(chosen, Reply):
            return chosen
        if args.pad and chosen.blocks and chosen.blocks[-1].get("type") == "text":
            last = {**chosen.blocks[-1], "text": chosen.blocks[-1]["text"] + " " + "x" * args.pad}
            chosen = replace(chosen, blocks=(*chosen.blocks[:-1], last), usage=(chosen.usage[0], args.pad // 4))
        return replace(chosen, latency=args.latency)

    server = ScriptedAnthropicServer(responder, host=args.host, port=args.port).start()
    server.batches.default = BatchTiming(seconds=args.batch_seconds)
    serve_until_stopped(server, server.url, lambda: f"requests={len(server.requests)}")


if __name__ == "__main__":
    main()
