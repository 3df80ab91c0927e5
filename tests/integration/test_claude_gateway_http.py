"""The --rpm/--tpm gateway's HTTP/1.1 side, byte for byte, from a raw socket (workers/claude_gateway.py).

The Claude CLI's own client happens to send content-length bodies; these requests are written by hand
so that the framings another client (or a later CLI) may use really reach the gateway: a chunked body
with a trailer, `Expect: 100-continue`, several requests on one keep-alive connection, and
`Connection: close`. The scripted Anthropic server is the upstream and says what arrived."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agentic_batch.testing.anthropic_server import ScriptedAnthropicServer
from agentic_batch.workers.claude_gateway import ModelCallGateway

pytestmark = pytest.mark.timeout(60)

BODY = json.dumps({"model": "m", "max_tokens": 10, "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()


class CountingGate:
    active = True

    def __init__(self) -> None:
        self.before: list[int] = []
        self.tokens: list[int] = []

    async def before_call(self, estimated_tokens: int = 0) -> None:
        self.before.append(estimated_tokens)

    def after_call(self, tokens_used: int) -> None:
        self.tokens.append(tokens_used)


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[tuple[ModelCallGateway, ScriptedAnthropicServer, CountingGate]]:
    server = ScriptedAnthropicServer().start()
    gate = CountingGate()
    gw = ModelCallGateway(server.url, gate)  # type: ignore[arg-type]
    await gw.start()
    try:
        yield gw, server, gate
    finally:
        await gw.close()
        server.stop()


async def _connect(gw: ModelCallGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gw.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """Status line, headers, and the (chunked or content-length) body of one response."""
    status = (await asyncio.wait_for(reader.readline(), 10)).rstrip()
    headers = {}
    while (line := await reader.readline()) != b"\r\n":
        assert line, f"the gateway closed the connection after {status!r}"
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            assert await reader.readline() == b"\r\n"
        assert await reader.readline() == b"\r\n"
        return status, headers, body
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


def _chunked(body: bytes, trailer: bytes) -> bytes:
    half = len(body) // 2
    return (b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\n%s\r\n\r\n"
            % (half, body[:half], len(body) - half, body[half:], trailer))


@pytest.mark.asyncio
async def test_chunked_trailer_100_continue_and_keep_alive_on_one_connection(gateway) -> None:  # type: ignore[no-untyped-def]
    gw, server, gate = gateway
    reader, writer = await _connect(gw)
    try:
        # 1: chunked body with a chunk extension and a trailer, after waiting for 100 Continue
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nTrailer: X-Check\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        assert server.count() == 0, "nothing forwarded before the body came"
        writer.write(_chunked(BODY, b"X-Check: abc"))
        await writer.drain()
        status, headers, body = await _read_response(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("text/event-stream") and b"message_stop" in body

        # 2: same connection, content-length body, no Expect (so no 100 Continue comes first)
        writer.write(b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
        await writer.drain()
        status, _, body = await _read_response(reader)
        assert status == b"HTTP/1.1 200 OK" and b"message_stop" in body

        # 3: same connection again, a call that is not a model call, asking to close afterwards
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status, _, body = await _read_response(reader)
        assert status == b"HTTP/1.1 200 OK" and json.loads(body) == {"data": [], "has_more": False}
        assert await asyncio.wait_for(reader.read(), 10) == b"", "the gateway closes after Connection: close"
    finally:
        writer.close()
    got = server.message_requests()
    assert [r.body for r in got] == [json.loads(BODY)] * 2, "the chunked body arrived whole, trailer dropped"
    assert all(r.headers.get("x-api-key") == "k" and "x-check" not in r.headers for r in got)
    assert all("expect" not in r.headers and "transfer-encoding" not in r.headers for r in got)
    assert len(gate.before) == 2 and all(t > 0 for t in gate.tokens) and len(gate.tokens) == 2


@pytest.mark.asyncio
async def test_a_request_that_is_not_http_gets_a_400_and_the_gateway_lives_on(gateway) -> None:  # type: ignore[no-untyped-def]
    gw, server, gate = gateway
    reader, writer = await _connect(gw)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    await writer.drain()
    status, _, body = await _read_response(reader)
    writer.close()
    assert status.startswith(b"HTTP/1.1 400") and json.loads(body)["type"] == "error"
    assert server.count(None) == 0 and gate.before == []
    reader, writer = await _connect(gw)  # the next connection is served as usual
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    await writer.drain()
    status, _, _ = await _read_response(reader)
    writer.close()
    assert status == b"HTTP/1.1 200 OK" and len(gate.before) == 1


@pytest.mark.asyncio
async def test_closing_with_a_keep_alive_connection_open_logs_no_error(
        gateway, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    gw, _, _ = gateway
    reader, writer = await _connect(gw)
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status, _, _ = await _read_response(reader)
    assert status == b"HTTP/1.1 200 OK"
    with caplog.at_level(logging.WARNING):
        await gw.close()  # the connection is idle, waiting for the CLI's next request
        await asyncio.sleep(0.1)
    writer.close()
    assert await asyncio.wait_for(reader.read(), 10) == b"", "close() ends the open connection"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
