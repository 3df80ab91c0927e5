"""The `anthropic` worker: the real `anthropic` SDK against the scripted Messages API server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.testing.anthropic_server import MessagesRequest, Reply, ScriptedAnthropicServer
from agentic_batch.workers.base import ErrorClass, UnitContext, UnitOutcome
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures.tracking import SetTracker

KIND = get_worker_kind("anthropic")


class Unit:
    """A real UnitContext whose events land in a list."""

    def __init__(self, workspace: Path, prompt: str = "do the task", timeout: float = 30.0) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.tracker = SetTracker()
        self.ctx = UnitContext(job_id=1, job_name="t", unit_id=1, key="k1", seq=1, attempt=1, prompt=prompt,
                               payload={}, source_kind="test", workspace=workspace, allowed_dirs=[workspace],
                               timeout=timeout, emit=lambda kind, data: self.events.append((kind, data)),
                               processes=self.tracker)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def run(server_url: str, unit: Unit, **options: Any) -> UnitOutcome:
    worker = KIND.build({"model": "claude-sonnet-4-6", "base_url": server_url, "http_client": HTTP_CLIENT["choice"],
                         **options})

    async def go() -> UnitOutcome:
        try:
            return await worker.run(unit.ctx)
        finally:
            await worker.aclose()  # type: ignore[attr-defined]

    return asyncio.run(go())


#: Every model call in this module goes through each client: the lean path on aiohttp and on httpx, and the SDK.
HTTP_CLIENT = {"choice": "auto"}


@pytest.fixture(autouse=True, params=["aiohttp", "httpx", "sdk"])
def http_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(HTTP_CLIENT, "choice", request.param)
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer() as srv:
        yield srv


def test_tool_loop_writes_a_real_file_then_answers(server: ScriptedAnthropicServer, tmp_path: Path) -> None:
    def responder(request: MessagesRequest) -> Reply:
        if request.turn == 0:
            return Reply.tool_use("write_file", {"path": "notes/out.txt", "content": request.first_user_text},
                                  text_before="Writing.", usage=(1000, 200))
        assert request.tool_results == [{"tool_use_id": request.tool_results[0]["tool_use_id"],
                                         "is_error": False, "text": "wrote 5 bytes to notes/out.txt"}]
        return Reply.text("done", usage=(1500, 50))

    server.responder = responder
    unit = Unit(tmp_path, prompt="hello")
    outcome = run(server.url, unit)
    assert outcome.ok, outcome.error
    assert outcome.output == "done" and outcome.turns == 2
    assert (tmp_path / "notes" / "out.txt").read_text() == "hello"
    assert unit.kinds == ["usage", "assistant", "tool_use", "tool_result", "usage", "assistant", "result"]
    assert unit.of("tool_use")[0]["input"] == {"path": "notes/out.txt", "content": "hello"}
    # claude-sonnet-4* is in the price table: $3 / $15 per million
    assert (outcome.tokens_in, outcome.tokens_out) == (2500, 250)
    assert outcome.cost_usd == pytest.approx((2500 * 3 + 250 * 15) / 1e6)
    first = server.message_requests()[0]
    assert "not-needed" in (first.headers.get("x-api-key", "") + first.headers.get("authorization", ""))
    assert first.body["max_tokens"] == 4096 and "Working directory" in first.body["system"]
    assert first.tool_names == ["read_file", "write_file", "list_dir", "search_files"]
    assert first.body["tools"][0]["input_schema"]["type"] == "object"
    assert not first.stream


def test_price_override_and_tool_errors(server: ScriptedAnthropicServer, tmp_path: Path) -> None:
    def responder(request: MessagesRequest) -> Reply:
        if request.turn == 0:
            return Reply.tool_use("read_file", {"path": "/etc/passwd"}, usage=(100, 10))
        assert request.tool_results[0]["is_error"] is True
        return Reply.text("refused", usage=(100, 10))

    server.responder = responder
    unit = Unit(tmp_path)
    outcome = run(server.url, unit, price_in=10.0, price_out=100.0, max_tokens=256, system_prompt="Be brief.")
    assert outcome.output == "refused"
    assert outcome.cost_usd == pytest.approx((200 * 10 + 20 * 100) / 1e6)
    assert unit.of("tool_result")[0]["is_error"] is True
    body = server.message_requests()[0].body
    assert body["max_tokens"] == 256 and body["system"].startswith("Be brief.")


@pytest.mark.parametrize(("reply", "error_class", "retry_after"), [
    (Reply.error(429, headers={"retry-after": "12"}), ErrorClass.retryable, 12.0),
    (Reply.error(529, message="Overloaded"), ErrorClass.retryable, None),
    (Reply.error(500), ErrorClass.retryable, None),
    (Reply.error(401, message="invalid x-api-key"), ErrorClass.permanent, None),
    (Reply.error(400, message="messages.0: bad"), ErrorClass.permanent, None),
    (Reply.error(429, message="Usage limit reached, resets in 2 hours"), ErrorClass.quota, 7200.0),
    (Reply.malformed(), ErrorClass.retryable, None),
])
def test_errors_are_classified(server: ScriptedAnthropicServer, tmp_path: Path, reply: Reply,
                               error_class: ErrorClass, retry_after: float | None) -> None:
    server.responder = lambda request: reply
    unit = Unit(tmp_path)
    outcome = run(server.url, unit)
    assert outcome.error_class is error_class, outcome.error
    assert outcome.retry_after == retry_after
    assert server.count() == 1  # no SDK retries
    assert unit.of("result")[0]["is_error"] is True


def test_max_turns(server: ScriptedAnthropicServer, tmp_path: Path) -> None:
    server.responder = lambda request: Reply.tool_use("list_dir", {})
    outcome = run(server.url, Unit(tmp_path), max_turns=2)
    assert outcome.error == "max turns (2) reached without a final answer"
    assert outcome.error_class is ErrorClass.permanent and outcome.turns == 2


def test_a_hung_request_is_cancelled_promptly(server: ScriptedAnthropicServer, tmp_path: Path) -> None:
    server.responder = lambda request: Reply.hang(30)
    worker = KIND.build({"model": "claude-sonnet-4-6", "base_url": server.url, "http_client": HTTP_CLIENT["choice"]})

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.run(Unit(tmp_path).ctx), timeout=0.5)
        await worker.aclose()  # type: ignore[attr-defined]

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 3


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    outcome = run("http://127.0.0.1:9", Unit(tmp_path))
    assert outcome.error_class is ErrorClass.retryable


def test_base_url_from_the_environment(server: ScriptedAnthropicServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    worker = KIND.build({"model": "claude-haiku-4-5", "http_client": HTTP_CLIENT["choice"]})
    outcome = asyncio.run(worker.run(Unit(tmp_path, prompt="hi").ctx))
    assert outcome.ok and server.count() == 1


def test_options_and_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="max.tokens"):
        KIND.parse_options({"model": "claude-sonnet-4-6", "max_tokens": 0})
    with pytest.raises(InvalidSpec, match="extra"):
        KIND.parse_options({"model": "claude-sonnet-4-6", "extra": True})
    options = KIND.parse_options({"model": "claude-sonnet-4-6"})
    assert options.api_key_env == "ANTHROPIC_API_KEY" and options.max_turns == 20  # type: ignore[attr-defined]
    assert KIND.check is not None
    with pytest.raises(InvalidSpec, match="ANTHROPIC_API_KEY"):
        KIND.check(options, "p", tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    KIND.check(options, "p", tmp_path)
    monkeypatch.setitem(sys.modules, "anthropic", None)
    KIND.check(options, "p", tmp_path)  # the lean path needs no SDK
    options = options.model_copy(update={"http_client": "sdk"})
    with pytest.raises(InvalidSpec) as info:
        KIND.check(options, "p", tmp_path)
    assert "agentic-batch[anthropic]" in info.value.one_line()
    outcome = asyncio.run(KIND.factory(options).run(Unit(tmp_path).ctx))
    assert outcome.error_class is ErrorClass.permanent and "agentic-batch[anthropic]" in (outcome.error or "")
