"""The lean request path of the `openai` and `anthropic` workers: one JSON POST per model call on a
connection pool shared by the job's units, the reply read with `json` into plain dicts.

Why not the SDK for this one call: at concurrency 100 against a 200 ms server, `AsyncOpenAI` spends
about 3.2 ms of CPU per call (request and response pydantic models, its HTTP stack), which made an
executor CPU-bound on one core long before the network was the limit. aiohttp posts the same request
for about 0.3 ms (measured in bench/api_lean.py). httpx is the fallback when aiohttp is not installed:
its connection pool scans every connection on every request, so one pool of 100 connections costs
~6.7 ms a call; several small clients, each carrying at most `HTTPX_REQUESTS_PER_CLIENT` requests at
a time, bring that to ~1 ms.

HTTP is parsed by aiohttp or httpx (h11), JSON by `json`. Failures come back as the same
`ModelCallError` (class, kind, retry-after, message) as the SDK path: status errors through
`tool_loop.status_error`, timeouts and connection errors with the SDK path's words.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from agentic_batch.workers.base import ErrorClass, FailureKind
from agentic_batch.workers.tool_loop import HTTPClientChoice, ModelCallError, status_error

if TYPE_CHECKING:
    import aiohttp
    import httpx

#: Connections one pool may open (the SDKs' default too); the engine's concurrency is the real bound.
MAX_CONNECTIONS = 1000
HTTPX_REQUESTS_PER_CLIENT = 8

#: (message, body) of a failed response as the provider's SDK words them, from (status, body text).
StatusWording = Callable[[int, str], tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class HTTPReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def post(self, url: str, body: bytes, timeout: float) -> HTTPReply:
        """POST `body` (JSON) to `url`; raise ModelCallError for a timeout or a connection failure."""

    async def close(self) -> None:
        """Close every pooled connection."""


def timed_out() -> ModelCallError:
    return ModelCallError("model request timed out", ErrorClass.retryable, kind=FailureKind.timeout)


def connection_failed(exc: BaseException) -> ModelCallError:
    return ModelCallError(f"connection error: {exc or type(exc).__name__}", ErrorClass.retryable,
                          kind=FailureKind.connection)


def malformed(detail: str) -> ModelCallError:
    return ModelCallError(f"malformed response from the model API: {detail}", ErrorClass.retryable,
                          kind=FailureKind.malformed_response)


def new_transport(choice: HTTPClientChoice, headers: dict[str, str], url: str) -> Transport:
    """A pool for `choice` ('aiohttp' or 'httpx') posting to `url`; call inside the event loop that will use it."""
    if choice == "aiohttp":
        return AiohttpTransport(headers, url)
    if choice == "httpx":
        return HttpxTransport(headers)
    raise ValueError(f"no lean transport for http_client={choice!r}")


def env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as httpx's trust_env reads them (so the SDKs)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class AiohttpTransport:
    """One aiohttp session. The proxy is read from the environment once, for the one URL the client
    posts to: aiohttp's own trust_env reads the environment and ~/.netrc in a thread on every request."""

    def __init__(self, headers: dict[str, str], url: str) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._proxy = env_proxy(url)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                                             headers=headers)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """As the SDKs' httpx timeout: `seconds` to get a connection, and between two reads."""
        found = self._timeouts.get(seconds)
        if found is None:
            found = self._timeouts[seconds] = self._aiohttp.ClientTimeout(total=None, connect=seconds,
                                                                          sock_read=seconds)
        return found

    async def post(self, url: str, body: bytes, timeout: float) -> HTTPReply:
        try:
            async with self.session.post(url, data=body, timeout=self._timeout(timeout),
                                         proxy=self._proxy) as response:
                return HTTPReply(response.status, response.headers, await response.read())
        except TimeoutError:  # aiohttp's ServerTimeoutError and connect timeouts are TimeoutErrors
            raise timed_out() from None
        except self._aiohttp.ClientError as exc:
            raise connection_failed(exc) from exc

    async def close(self) -> None:
        await self.session.close()


class HttpxTransport:
    """Several small httpx clients: a request takes the first one with fewer than
    `HTTPX_REQUESTS_PER_CLIENT` requests in flight (see the module doc for why)."""

    def __init__(self, headers: dict[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self._headers = headers
        self._clients: list[httpx.AsyncClient] = []
        self._in_flight: list[int] = []

    def _take(self) -> int:
        for index, count in enumerate(self._in_flight):
            if count < HTTPX_REQUESTS_PER_CLIENT:
                self._in_flight[index] = count + 1
                return index
        limits = self._httpx.Limits(max_connections=None, max_keepalive_connections=HTTPX_REQUESTS_PER_CLIENT)
        self._clients.append(self._httpx.AsyncClient(headers=self._headers, limits=limits, trust_env=True))
        self._in_flight.append(1)
        return len(self._clients) - 1

    async def post(self, url: str, body: bytes, timeout: float) -> HTTPReply:
        index = self._take()
        try:
            response = await self._clients[index].post(url, content=body, timeout=timeout)
            return HTTPReply(response.status_code, response.headers, response.content)
        except self._httpx.TimeoutException:
            raise timed_out() from None
        except (self._httpx.TransportError, self._httpx.InvalidURL) as exc:
            raise connection_failed(exc) from exc
        finally:
            self._in_flight[index] -= 1

    async def close(self) -> None:
        clients, self._clients, self._in_flight = self._clients, [], []
        await asyncio.gather(*(client.aclose() for client in clients))


class LeanClient:
    """One provider endpoint on a lean transport: `send(request, timeout)` -> the reply as a dict."""

    def __init__(self, transport: Transport, url: str, wording: StatusWording) -> None:
        self.transport, self.url, self.wording = transport, url, wording

    async def send(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        reply = await self.transport.post(self.url, json.dumps(request).encode(), timeout)
        if reply.status >= 300:
            message, body = self.wording(reply.status, reply.body.decode("utf-8", "replace").strip())
            raise status_error(reply.status, message, body, reply.headers)
        try:
            data = json.loads(reply.body)
        except ValueError as exc:  # a body cut short: the SDK path's words
            raise malformed(str(exc)) from exc
        if not isinstance(data, dict):
            raise malformed(f"expected a JSON object, got {type(data).__name__}")
        return data

    async def close(self) -> None:
        await self.transport.close()


def _json_or_text(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, text


def openai_wording(status: int, text: str) -> tuple[str, Any]:
    """`openai`'s APIStatusError: message `Error code: N - <error.message>`, body the `error` object."""
    _, body = _json_or_text(text)
    message = f"Error code: {status}"
    error = body.get("error", body) if isinstance(body, dict) else None
    detail = error.get("message") if isinstance(error, dict) else None
    if isinstance(detail, str) and detail:
        message += f" - {detail}"
    return message, (error if isinstance(body, dict) else body)


def anthropic_wording(status: int, text: str) -> tuple[str, Any]:
    """`anthropic`'s APIStatusError: message `Error code: N - <the body>`, body the whole JSON."""
    parsed, body = _json_or_text(text)
    if not parsed:
        return (text or f"Error code: {status}"), body
    return f"Error code: {status} - {body}", body
