"""`--rpm/--tpm` reach every model call the real Claude CLI makes (workers/claude_gateway.py).

The CLI runs its own agent loop, so a rate-limited job routes it through the executor's gateway: these
tests drive the real CLI against the scripted Anthropic server and watch the gate and the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.testing.anthropic_server import MessagesRequest, Reply, ScriptedConversation
from agentic_batch.testing.claude_env import ClaudeOffline, patched_environ
from agentic_batch.workers.base import ErrorClass
from agentic_batch.workers.claude_gateway import UsageCounter, applies, is_model_call
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures import claude_env as claude_fixtures
from tests.fixtures.claude_env import Events, needs_claude_cli, unit_context

pytestmark = pytest.mark.timeout(90)
offline_claude = claude_fixtures.offline_claude
Offline = Callable[..., ClaudeOffline]


class RecordingGate:
    """The engine's gate as the worker sees it; holds the call numbers listed in `hold` until released."""

    active = True

    def __init__(self, hold: tuple[int, ...] = ()) -> None:
        self.before: list[int] = []
        self.tokens: list[int] = []
        self.hold = set(hold)
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def before_call(self, estimated_tokens: int = 0) -> None:
        self.before.append(estimated_tokens)
        if len(self.before) in self.hold:
            self.waiting.set()
            await self.release.wait()

    def after_call(self, tokens_used: int) -> None:
        self.tokens.append(tokens_used)


def two_turns(req: MessagesRequest) -> Any:
    return ScriptedConversation([
        Reply.tool_use("Write", {"file_path": f"{req.cwd}/answer.txt", "content": "42\n"}, usage=(100, 20)),
        Reply.text("wrote answer.txt", usage=(150, 10)),
    ])(req)


@needs_claude_cli
@pytest.mark.asyncio
async def test_every_model_call_passes_the_gate(offline_claude: Offline, tmp_path: Path) -> None:
    env = offline_claude(two_turns)
    gate = RecordingGate()
    ctx = unit_context(tmp_path / "ws", "write the answer", [], gate=gate)
    worker = get_worker_kind("claude").build({})
    try:
        outcome = await worker.run(ctx)
    finally:
        await worker.aclose()
    assert outcome.ok, outcome.error
    assert (ctx.workspace / "answer.txt").read_text() == "42\n"
    assert len(env.server.message_requests()) == 2
    assert len(gate.before) == 2, "one gate pass per model call, not per unit"
    assert all(estimate > 0 for estimate in gate.before)
    assert gate.tokens == [120, 160], "tokens per call, from each answer's usage"
    assert sum(gate.tokens) == outcome.tokens_in + outcome.tokens_out


@needs_claude_cli
@pytest.mark.asyncio
async def test_a_held_gate_holds_the_clis_next_model_call(offline_claude: Offline, tmp_path: Path) -> None:
    env = offline_claude(two_turns)
    gate = RecordingGate(hold=(2,))
    ctx = unit_context(tmp_path / "ws", "write the answer", [], gate=gate)
    worker = get_worker_kind("claude").build({})
    try:
        run = asyncio.create_task(worker.run(ctx))
        await asyncio.wait_for(gate.waiting.wait(), timeout=60)
        await asyncio.sleep(1.0)  # the CLI's second call waits at the gate meanwhile
        assert len(env.server.message_requests()) == 1
        assert (ctx.workspace / "answer.txt").is_file(), "the first turn's tool ran"
        assert not run.done()
        gate.release.set()
        outcome = await asyncio.wait_for(run, timeout=60)
    finally:
        await worker.aclose()
    assert outcome.ok, outcome.error
    assert len(env.server.message_requests()) == 2


@needs_claude_cli
@pytest.mark.asyncio
async def test_unreachable_endpoint_is_a_retryable_unit_error(offline_claude: Offline, tmp_path: Path) -> None:
    offline_claude(two_turns)
    with patched_environ({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}):  # nothing listens on port 9
        gate = RecordingGate()
        events: Events = []
        ctx = unit_context(tmp_path / "ws", "write the answer", events, gate=gate)
        worker = get_worker_kind("claude").build({})
        try:
            outcome = await worker.run(ctx)
        finally:
            await worker.aclose()
    assert not outcome.ok
    assert outcome.error_class == ErrorClass.retryable, outcome.error
    assert len(gate.before) >= 1 and gate.tokens and gate.tokens[0] == 0


@needs_claude_cli
@pytest.mark.asyncio
async def test_without_limits_the_cli_talks_to_the_endpoint_directly(offline_claude: Offline,
                                                                    tmp_path: Path) -> None:
    offline_claude(two_turns)
    gate = RecordingGate()
    gate.active = False  # type: ignore[misc]
    ctx = unit_context(tmp_path / "ws", "write the answer", [], gate=gate)
    worker = get_worker_kind("claude").build({})
    outcome = await worker.run(ctx)
    await worker.aclose()
    assert outcome.ok, outcome.error
    assert len(gate.before) == 1 and worker._gateway is None


# --- pieces (no CLI) ---------------------------------------------------------------------------

def test_usage_counter_reads_sse_split_anywhere() -> None:
    stream = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,'
              b'"output_tokens":1}}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta"}\n\n'
              b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":30}}\n\n')
    for size in (1, 7, 64, len(stream)):
        counter = UsageCounter()
        for i in range(0, len(stream), size):
            counter.feed(stream[i:i + size])
        assert counter.finish() == 42  # 12 in, 30 out: the delta's count is the running total


def test_usage_counter_reads_a_json_answer() -> None:
    counter = UsageCounter()
    counter.feed(b'{"type":"message","usage":{"input_tokens":5,\n"output_tokens":7}}')
    assert counter.finish() == 12


def test_which_requests_and_providers_are_gated() -> None:
    assert is_model_call("POST", "/v1/messages?beta=true")
    assert is_model_call("POST", "/prefix/v1/messages")
    assert not is_model_call("POST", "/v1/messages/count_tokens")
    assert not is_model_call("GET", "/v1/messages")
    assert applies({}) and applies({"CLAUDE_CODE_USE_BEDROCK": "0"})
    assert not applies({"CLAUDE_CODE_USE_BEDROCK": "1"})


# --- the gateway as an HTTP forwarder (httpx client, scripted server upstream) ---------------------

@pytest.mark.asyncio
async def test_gateway_forwards_keep_alive_chunked_head_and_counts_only_model_calls() -> None:
    import httpx

    from agentic_batch.testing.anthropic_server import ScriptedAnthropicServer
    from agentic_batch.workers.claude_gateway import ModelCallGateway

    server = ScriptedAnthropicServer().start()
    gate = RecordingGate()
    gateway = ModelCallGateway(server.url, gate)
    await gateway.start()
    try:
        body = {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": "k"}) as client:
            first = await client.post("/v1/messages", json=body)
            second = await client.post("/v1/messages?beta=true", json={**body, "stream": False})

            async def chunks():  # a chunked request body
                yield b'{"model":"m","max_tokens":10,'
                yield b'"messages":[{"role":"user","content":"hi"}]}'

            third = await client.post("/v1/messages", content=chunks())
            counted = await client.post("/v1/messages/count_tokens", json=body)
            head = await client.head("/v1/models")
            listed = await client.get("/v1/models")
        assert first.status_code == 200 and "message_stop" in first.text
        assert second.status_code == 200 and second.json()["type"] == "message"
        assert third.status_code == 200
        assert counted.status_code == 200 and counted.json()["input_tokens"] >= 1
        assert head.status_code == 200 and head.content == b""
        assert listed.json() == {"data": [], "has_more": False}
        assert len(gate.before) == 3 and len(gate.tokens) == 3 and all(t > 0 for t in gate.tokens)
        assert all(r.headers.get("x-api-key") == "k" for r in server.requests)
    finally:
        await gateway.close()
        server.stop()
