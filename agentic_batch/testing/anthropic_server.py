"""A scripted Anthropic Messages API server on 127.0.0.1, for tests and benchmarks.

The real Claude Code CLI (bundled in the claude-agent-sdk wheel) talks to whatever
`ANTHROPIC_BASE_URL` names. Pointing it here lets tests run the real agent loop, with real Write /
Read / Bash tools executed in a real workspace, but with model turns we script: text, `tool_use`
blocks, thinking, HTTP errors with `retry-after`, hangs and malformed bodies, each with optional
latency. It speaks `POST /v1/messages` as SSE (`stream: true`) or plain JSON, and
`POST /v1/messages/count_tokens`; anything else gets a harmless JSON answer.

A responder is a function of the parsed request. Many units run concurrently against one server,
so scripts are keyed per conversation by the text of the first user message (which carries the
unit's prompt) and indexed by `turn` (assistant messages so far). Stdlib only, so the fixture costs
nothing to import and works wherever the package does.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentic_batch.testing.anthropic_replies import Reply, message_json, sse_events

__all__ = [
    "MessagesRequest",
    "Reply",
    "Responder",
    "ScriptedAnthropicServer",
    "ScriptedConversation",
    "echo_responder",
    "scripted",
    "write_file_responder",
]

_SYSTEM_REMINDER = "<system-reminder>"
_CWD_LINE = re.compile(r"Primary working directory: (\S[^\n]*)")


@dataclass
class MessagesRequest:
    """One received request, parsed. Indexing (`req["model"]`) reads the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)

    @property
    def route(self) -> str:
        """The path without its query string (the CLI sends `/v1/messages?beta=true`)."""
        return self.path.split("?", 1)[0]

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    @property
    def turn(self) -> int:
        """Assistant messages already in the conversation: 0 for the first model call."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def first_user_text(self) -> str:
        """The text of the first user message, without the CLI's injected `<system-reminder>`s.

        The CLI prepends reminder blocks to the user's prompt; dropping them leaves the unit's own
        prompt, which is what a per-conversation script wants to match on.
        """
        for m in self.messages:
            if m.get("role") == "user":
                texts = [t for t in _texts(m.get("content")) if not t.lstrip().startswith(_SYSTEM_REMINDER)]
                return "\n".join(texts)
        return ""

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return "\n".join(_texts(m.get("content")))
        return ""

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """tool_result blocks of the last user message: {tool_use_id, is_error, text}."""
        for m in reversed(self.messages):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            blocks = content if isinstance(content, list) else []
            return [
                {
                    "tool_use_id": b.get("tool_use_id"),
                    "is_error": bool(b.get("is_error")),
                    "text": "\n".join(_texts(b.get("content"))),
                }
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
        return []

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.body.get("tools") or [] if isinstance(t, dict)]

    @property
    def cwd(self) -> str | None:
        """The agent's working directory, as the CLI states it in its environment section."""
        texts = _texts(self.body.get("system"))
        for m in self.messages:
            texts.extend(_texts(m.get("content")))
        for text in texts:
            if m := _CWD_LINE.search(text):
                return m.group(1).strip()
        return None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"]


Responder = Callable[[MessagesRequest], "Reply | Sequence[Reply]"]


def echo_responder(request: MessagesRequest) -> Reply:
    """Answer with text derived from the prompt, so each unit's output is checkable."""
    prompt = " ".join(request.first_user_text.split())
    return Reply.text(f"DONE: {prompt[:40]}")


def write_file_responder(request: MessagesRequest) -> Reply:
    """Turn 0: Write `result.txt` in the agent's cwd with the prompt; then finish with text."""
    prompt = " ".join(request.first_user_text.split())
    if request.turn == 0:
        cwd = request.cwd or "."
        return Reply.tool_use("Write", {"file_path": f"{cwd}/result.txt", "content": f"{prompt}\n"})
    return Reply.text(f"DONE: {prompt[:40]}")


class ScriptedConversation:
    """Replies for one conversation, indexed by turn, for the requests `when` selects.

    `when` is a substring of (or a predicate on) `first_user_text`; None matches every request.
    An entry may be a list: the first request for that turn gets item 0, a client retry of the same
    turn item 1, and so on (the last repeats), which scripts "529, then success". Turns past the
    script get `after_end`.
    """

    def __init__(
        self,
        replies: Sequence[Reply | Sequence[Reply]],
        *,
        when: str | Callable[[str], bool] | None = None,
        after_end: Reply | None = None,
    ) -> None:
        self.replies = list(replies)
        self.when = when
        self.after_end = after_end or Reply.text("DONE")

    def matches(self, request: MessagesRequest) -> bool:
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return self.when in request.first_user_text
        return bool(self.when(request.first_user_text))

    def __call__(self, request: MessagesRequest) -> Reply | Sequence[Reply]:
        if request.turn < len(self.replies):
            return self.replies[request.turn]
        return self.after_end


def scripted(*conversations: ScriptedConversation, default: Responder = echo_responder) -> Responder:
    """A responder that hands each request to the first conversation that matches it."""

    def respond(request: MessagesRequest) -> Reply | Sequence[Reply]:
        for conv in conversations:
            if conv.matches(request):
                return conv(request)
        return default(request)

    return respond


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
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

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record(b"")
        self._send_json(200, {"data": [], "has_more": False})

    def do_HEAD(self) -> None:  # noqa: N802
        self._record(b"")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        req = self._record(self._read_body())
        try:
            if req.route == "/v1/messages/count_tokens":
                self._send_json(200, {"input_tokens": max(1, len(json.dumps(req.body)) // 4)})
            elif req.route == "/v1/messages":
                self._answer_messages(req)
            else:
                self._send_json(200, {})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

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


class ScriptedAnthropicServer:
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
        self._attempts: dict[tuple[str, int, str], int] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

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

    def start(self) -> ScriptedAnthropicServer:
        self._stopping.clear()
        self._httpd = _HTTPServer((self._host, self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-anthropic",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; handlers that hang or wait on latency return at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedAnthropicServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, req: MessagesRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _choose(self, req: MessagesRequest) -> Reply:
        try:
            chosen = self.responder(req)
        except Exception as exc:  # a broken script should be visible, not a hung client
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
    args = parser.parse_args(argv)
    base = _SCENARIOS[args.scenario]

    def responder(req: MessagesRequest) -> Reply | Sequence[Reply]:
        chosen = base(req)
        return replace(chosen, latency=args.latency) if isinstance(chosen, Reply) else chosen

    server = ScriptedAnthropicServer(responder, host=args.host, port=args.port).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
