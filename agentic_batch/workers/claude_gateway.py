"""`--rpm` / `--tpm` for every model call the Claude Code CLI makes, not once per unit.

The CLI runs the agent loop itself: one unit is several model calls (one per turn), none of them
through our code. So when a job sets a rate limit, the worker points the CLI's `ANTHROPIC_BASE_URL`
at this gateway: a small HTTP/1.1 forwarder on 127.0.0.1 inside the executor that awaits the job's
`CallGate` before each `POST …/v1/messages`, forwards the request unchanged (headers, key, body) to
the real endpoint (the user's `ANTHROPIC_BASE_URL`, else the Anthropic API), streams the answer back
as it arrives, and reports the tokens the answer's `usage` says were used to the gate. h11 reads and
frames the CLI's side of HTTP/1.1 (chunked bodies, trailers, 100-continue, keep-alive), httpx the
endpoint's.

Only then is it in the path: without --rpm/--tpm, or with Bedrock/Vertex/Foundry (which do not use
ANTHROPIC_BASE_URL), the CLI talks to its endpoint directly and the gate is applied once per unit.

An unreachable endpoint is answered with an Anthropic-style 502 error, which the CLI reports and the
engine classifies as retryable, as it would the connection error itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import h11

from agentic_batch.workers.base import CallGate
from agentic_batch.workers.claude import AUTH_VARS

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
#: Variables that make the CLI use another provider than ANTHROPIC_BASE_URL.
_OTHER_PROVIDERS = tuple(name for name in AUTH_VARS if name.startswith("CLAUDE_CODE_USE_"))
#: Hop-by-hop headers (RFC 9110 7.6.1), Expect (the gateway answers the 100 Continue itself) and the
#: ones the client library sets itself.
_DROP_REQUEST = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
                 "proxy-connection", "proxy-authorization", "accept-encoding", "expect", "trailer"}
_DROP_RESPONSE = {"content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding", "upgrade"}


def applies(environ: Mapping[str, str]) -> bool:
    """Whether the CLI will send its model calls to ANTHROPIC_BASE_URL (so the gateway can see them)."""
    return not any(environ.get(name, "").strip() not in ("", "0", "false") for name in _OTHER_PROVIDERS)


def is_model_call(method: str, target: str) -> bool:
    return method == "POST" and target.split("?", 1)[0].rstrip("/").endswith("/v1/messages")


class UsageCounter:
    """Tokens from an answer as it streams: SSE `message_start` / `message_delta` usage, or a JSON body.

    The stream's counts are running totals (`message_start` carries the input and a first output
    count, each `message_delta` the output so far), so the largest of each is the answer's usage."""

    def __init__(self) -> None:
        self._buffer = b""
        self.input_tokens = 0
        self.output_tokens = 0
        self._body: list[bytes] = []
        self._sse = False

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self._sse = True
                self._count(line[5:])
            elif not self._sse:
                self._body.append(line + b"\n")

    def finish(self) -> int:
        if not self._sse:
            self._count(b"".join(self._body) + self._buffer)
        return self.input_tokens + self.output_tokens

    def _count(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        usage = event.get("usage") or (event.get("message") or {}).get("usage")
        if isinstance(usage, dict):
            self.input_tokens = max(self.input_tokens, int(usage.get("input_tokens") or 0))
            self.output_tokens = max(self.output_tokens, int(usage.get("output_tokens") or 0))


#: Bytes read from the CLI's socket at a time; h11 buffers what it has not parsed yet.
_READ_SIZE = 65536


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next HTTP event from the CLI, reading its socket as h11 needs (b"" tells h11 it closed)."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(_READ_SIZE))
    return event


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The whole request body, however it is framed (length, chunked with trailers, after a 100 Continue)."""
    if conn.they_are_waiting_for_100_continue:
        await _send(conn, writer, h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
    parts = []
    while not isinstance(event := await _next_event(conn, reader), h11.EndOfMessage):  # its trailers: dropped
        if isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("the client closed the connection in the middle of a request")
        parts.append(bytes(event.data))
    return b"".join(parts)


def _error(status: int, message: str) -> tuple[h11.Response, bytes]:
    payload = json.dumps({"type": "error", "error": {"type": "api_error", "message": message}}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
    return h11.Response(status_code=status, headers=headers), payload


class ModelCallGateway:
    """One per worker (executor); `start()` once inside the running loop, `close()` at the end."""

    def __init__(self, upstream: str, gate: CallGate) -> None:
        self.upstream = upstream.rstrip("/")
        self.gate = gate
        self.url = ""
        self.model_calls = 0
        self._server: asyncio.Server | None = None
        self._client: Any = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        import httpx

        # No overall timeout: a model call may stream for minutes, and the unit's timeout kills the CLI.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0), trust_env=True)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._client is not None:
            await self._client.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            # keep-alive: requests one after another, while both sides leave the connection open
            while await self._one_request(conn, reader, writer):
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:  # not HTTP/1.1 as h11 reads it: say so if we still can
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                response, payload = _error(exc.error_status_hint, f"agentic-batch gateway: bad request: {exc}")
                with contextlib.suppress(Exception):
                    await _send(conn, writer, response)
                    await _send(conn, writer, h11.Data(data=payload))
                    await _send(conn, writer, h11.EndOfMessage())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the CLI went away (finished, or killed at a timeout)
        except asyncio.CancelledError:
            # Only close() cancels a handler. Ending normally keeps asyncio 3.11's stream callback from
            # logging a traceback for every connection still open at the end of a job.
            pass
        except Exception as exc:  # never take the executor down for one connection
            log.warning("model-call gateway: %s: %s", type(exc).__name__, exc)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Forward one request and its answer; whether the connection can carry the next one."""
        request = await _next_event(conn, reader)
        if not isinstance(request, h11.Request):  # ConnectionClosed: the CLI is done with this connection
            return False
        method = request.method.decode("ascii")
        target = request.target.decode("latin-1")
        forward = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
                   if name.decode("latin-1") not in _DROP_REQUEST]  # h11 gives names lower-cased
        body = await _read_body(conn, reader, writer)
        model_call = is_model_call(method, target)
        if model_call:
            self.model_calls += 1
            await self.gate.before_call(len(body) // 4)
            if reader.at_eof():  # the CLI went away while it waited (unit killed): don't pay for its call
                self.gate.after_call(0)
                return False
        counter = UsageCounter()
        answered = False
        try:
            async with self._client.stream(method, self.upstream + target, headers=forward, content=body) as resp:
                headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _DROP_RESPONSE]
                # No framing header: h11 chunks the body (or closes after it for an HTTP/1.0 client),
                # and sends none for HEAD, 204 and 304.
                await _send(conn, writer, h11.Response(status_code=resp.status_code, headers=headers,
                                                       reason=resp.reason_phrase or ""))
                answered = True
                async for chunk in resp.aiter_bytes():
                    if chunk and method != "HEAD":
                        counter.feed(chunk)
                        await _send(conn, writer, h11.Data(data=chunk))
                await _send(conn, writer, h11.EndOfMessage())
        except ConnectionError:
            raise
        except Exception as exc:  # the endpoint: refused, reset, TLS, DNS, or a cut stream
            if answered:  # too late for an error answer: cut the connection, the CLI sees a broken stream
                raise ConnectionError(str(exc)) from exc
            response, payload = _error(502, f"agentic-batch gateway could not reach {self.upstream}: "
                                            f"{type(exc).__name__}: {exc}")
            await _send(conn, writer, response)
            await _send(conn, writer, h11.Data(data=payload))
            await _send(conn, writer, h11.EndOfMessage())
        finally:
            if model_call:
                self.gate.after_call(counter.finish())
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE
