"""A scripted OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1, for tests and benchmarks.

The `openai` worker is tested with the real `openai` SDK talking HTTP to this server, so the whole
path (request shape, JSON parsing, error classes, retry-after headers) is exercised without the
internet. A *responder* decides each answer: a callable `Request -> Reply`, or a list of replies
played in order. The server can add latency, enforce its own requests-per-minute limit (answering 429
with `retry-after`, so a benchmark can measure the achieved rate), fail, hang, or send broken JSON.

It is a `ThreadingHTTPServer` with daemon threads and a deep listen backlog, so hundreds of
concurrent keep-alive connections each get a thread and a hung reply never blocks `stop()`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import threading
import time
from agentic_batch.testing.lifecycle import ServerLifecycle, serve_until_stopped
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Reply", "Request", "ScriptedOpenAIServer", "echo_responder"]


@dataclass
class Request:
    """One request the server received, with helpers for writing responders."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: 1-based arrival number over the server's life (rate-limited requests included).
    number: int = 0
    received_at: float = field(default_factory=time.time)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools") or [])

    @property
    def turn(self) -> int:
        """How many assistant messages the conversation already has (0 on the first call)."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def first_user_text(self) -> str:
        for message in self.messages:
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    @property
    def last_tool_results(self) -> list[dict[str, Any]]:
        """The `tool` messages after the last assistant message: [{tool_call_id, content}, ...]."""
        results: list[dict[str, Any]] = []
        for message in reversed(self.messages):
            if message.get("role") != "tool":
                break
            results.append({"tool_call_id": message.get("tool_call_id"),
                            "content": _text_of(message.get("content"))})
        return list(reversed(results))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


@dataclass
class Reply:
    """What the server answers to one request. Build with the classmethods."""

    kind: str
    content: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: Extra delay before this reply, on top of the server's latency.
    latency: float = 0.0
    #: (prompt_tokens, completion_tokens); estimated from the text (chars/4) when None.
    usage: tuple[int, int] | None = None
    error_type: str | None = None
    error_code: str | None = None

    @classmethod
    def text(cls, content: str, *, latency: float = 0.0, usage: tuple[int, int] | None = None) -> Reply:
        return cls(kind="text", content=content, latency=latency, usage=usage)

    @classmethod
    def tool_calls(cls, calls: Sequence[tuple[str, dict[str, Any]]], *, text: str | None = None,
                   latency: float = 0.0, usage: tuple[int, int] | None = None) -> Reply:
        return cls(kind="tool_calls", calls=list(calls), content=text, latency=latency, usage=usage)

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None, *,
              error_type: str | None = None, code: str | None = None, latency: float = 0.0) -> Reply:
        return cls(kind="error", status=status, message=message, headers=dict(headers or {}),
                   error_type=error_type, error_code=code, latency=latency)

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        """Accept the request, say nothing for `seconds`, then drop the connection."""
        return cls(kind="hang", seconds=seconds)

    @classmethod
    def malformed(cls, *, latency: float = 0.0) -> Reply:
        """A 200 whose JSON body is cut off mid-object."""
        return cls(kind="malformed", latency=latency)


Responder = Callable[[Request], Reply]


def echo_responder(request: Request) -> Reply:
    """Answer every request with the first user message: the benchmark's default scenario."""
    return Reply.text(f"echo: {request.first_user_text}")


def _write_then_answer(request: Request) -> Reply:
    """Scenario `write`: write `out.txt` with the user's text, then answer `done`."""
    if request.turn == 0:
        return Reply.tool_calls([("write_file", {"path": "out.txt", "content": request.first_user_text})])
    return Reply.text("done")


SCENARIOS: dict[str, Responder] = {"echo": echo_responder, "write": _write_then_answer}


class _ScriptResponder:
    """Plays a fixed list of replies in order; answers 500 once it runs out."""

    def __init__(self, replies: Iterable[Reply]) -> None:
        self._replies = deque(replies)

    def __call__(self, request: Request) -> Reply:
        if not self._replies:
            return Reply.error(500, "scripted server: no replies left")
        return self._replies.popleft()


class ScriptedOpenAIServer(ServerLifecycle):
    """The server. Use as a context manager or call `start()` / `stop()`; `url` ends in `/v1`."""

    def __init__(self, responder: Responder | Iterable[Reply] = echo_responder, latency: float = 0.0,
                 rpm_limit: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 keep_requests: bool = True) -> None:
        self.responder: Responder = responder if callable(responder) else _ScriptResponder(responder)
        self.latency = latency
        self.rpm_limit = rpm_limit
        self.keep_requests = keep_requests
        #: Requests that reached the responder (not those the rpm limit turned away).
        self.requests: list[Request] = []
        #: Every request received, and those answered 429 by the server's own rpm limit.
        self.request_count = 0
        self.rate_limited_count = 0
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.root_url + "/v1"

    def start(self) -> Self:
        self._start_with(type("_BoundHandler", (_Handler,), {"server_ref": self}))
        return self

    def _start_with(self, handler: type[BaseHTTPRequestHandler]) -> None:
        """Serve with `handler` (a subclass adds routes: see openai_batches)."""
        httpd = _Server((self._host, self._port), handler)
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-openai-server", daemon=True)
        self._thread.start()


    # --- decisions -------------------------------------------------------------------------------

    def _admit(self, request: Request) -> Reply | None:
        """Count the request; return a 429 when over the rpm limit, else None."""
        with self._lock:
            self.request_count += 1
            request.number = self.request_count
            if self.rpm_limit is None:
                return None
            now = time.monotonic()
            while self._window and now - self._window[0] >= 60.0:
                self._window.popleft()
            if len(self._window) < self.rpm_limit:
                self._window.append(now)
                return None
            self.rate_limited_count += 1
            wait = max(1, math.ceil(self._window[0] + 60.0 - now))
        return Reply.error(429, f"Rate limit reached for requests: limit {self.rpm_limit} per minute.",
                           {"retry-after": str(wait)}, error_type="requests", code="rate_limit_exceeded")

    def decide(self, request: Request) -> Reply:
        with self._lock:
            if self.keep_requests:
                self.requests.append(request)
            return self.responder(request)

    def next_id(self) -> int:
        return next(self._ids)

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default backlog of 5 refuses a burst of 100 connections


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server_ref: ScriptedOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        server = self.server_ref
        request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        limited = server._admit(request)
        reply = limited or server.decide(request)
        if limited is None:
            server.wait(server.latency + reply.latency)
        self._answer(request, reply)

    # --- writing replies -------------------------------------------------------------------------

    def _answer(self, request: Request, reply: Reply) -> None:
        server = self.server_ref
        if reply.kind == "hang":
            server.wait(reply.seconds)
            self.close_connection = True
            return
        if reply.kind == "error":
            error = {"message": reply.message, "type": reply.error_type or _error_type(reply.status),
                     "param": None, "code": reply.error_code}
            self._send_json(reply.status, {"error": error}, reply.headers)
            return
        if reply.kind == "malformed":
            self._send_raw(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"in',
                           "application/json")
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.kind == "tool_calls":
            message["tool_calls"] = [
                {"id": f"call_{server.next_id()}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for name, args in reply.calls
            ]
        finish = "tool_calls" if reply.kind == "tool_calls" else "stop"
        prompt_tokens, completion_tokens = reply.usage or _estimate_usage(request, message)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        ident = f"chatcmpl-{server.next_id()}"
        if request.body.get("stream"):
            self._send_stream(request, ident, message, finish, usage)
            return
        self._send_json(200, {
            "id": ident, "object": "chat.completion", "created": int(time.time()),
            "model": request.model or "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        })

    def _send_stream(self, request: Request, ident: str, message: dict[str, Any], finish: str,
                     usage: dict[str, int]) -> None:
        """Server-sent events: one delta with the whole message, the finish, optional usage, [DONE]."""
        base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": request.model or "scripted"}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if "tool_calls" in message:
            delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
        chunks = [dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]),
                  dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}])]
        if (request.body.get("stream_options") or {}).get("include_usage"):
            chunks.append(dict(base, choices=[], usage=usage))
        payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self._send_raw(200, payload, "text/event-stream")

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_raw(self, status: int, payload: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-request-id", f"req_{self.server_ref.next_id()}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its own timeout)


def _error_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found", 429: "rate_limit_error"}.get(status, "server_error")


def _estimate_usage(request: Request, message: dict[str, Any]) -> tuple[int, int]:
    """Deterministic token counts (about four characters a token), so cost tests can predict them."""
    prompt = max(1, len(json.dumps(request.messages)) // 4)
    completion = max(1, len(json.dumps(message.get("content") or "") + json.dumps(message.get("tool_calls") or
                                                                                   [])) // 4)
    return prompt, completion


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m agentic_batch.testing.openai_server --port 8000 --latency 0.1 --rpm-limit 600`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--rpm-limit", type=int, default=None, help="answer 429 above N requests/minute")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="echo")
    args = parser.parse_args(argv)
    server = ScriptedOpenAIServer(SCENARIOS[args.scenario], latency=args.latency, rpm_limit=args.rpm_limit,
                                  host=args.host, port=args.port, keep_requests=False)
    server.start()
    serve_until_stopped(server, server.url,
                        lambda: f"requests={server.request_count} rate_limited={server.rate_limited_count}")


if __name__ == "__main__":
    main()
