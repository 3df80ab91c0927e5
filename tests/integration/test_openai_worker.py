"""The `openai` worker: the real `openai` SDK against the scripted chat-completions server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.testing.openai_server import Reply, Request, ScriptedOpenAIServer
from agentic_batch.workers.base import ErrorClass, UnitContext, UnitOutcome
from agentic_batch.workers.pricing import table_price
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures.tracking import SetTracker

KIND = get_worker_kind("openai")


class RecordingGate:
    active = True

    def __init__(self) -> None:
        self.before: list[int] = []
        self.after: list[int] = []

    async def before_call(self, estimated_tokens: int = 0) -> None:
        self.before.append(estimated_tokens)

    def after_call(self, tokens_used: int) -> None:
        self.after.append(tokens_used)


class Unit:
    """A real UnitContext whose events land in a list."""

    def __init__(self, workspace: Path, prompt: str = "do the task", feedback: str | None = None,
                 timeout: float = 30.0) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.tracker = SetTracker()
        self.gate = RecordingGate()
        self.ctx = UnitContext(job_id=1, job_name="t", unit_id=1, key="k1", seq=1, attempt=1, prompt=prompt,
                               payload={"n": 1}, source_kind="test", workspace=workspace,
                               allowed_dirs=[workspace], timeout=timeout,
                               emit=lambda kind, data: self.events.append((kind, data)),
                               processes=self.tracker, feedback=feedback, gate=self.gate)

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def run(server_url: str, unit: Unit, **options: Any) -> UnitOutcome:
    worker = KIND.build({"model": "gpt-4o-mini", "base_url": server_url, "http_client": HTTP_CLIENT["choice"],
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
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as srv:
        yield srv


def script(server: ScriptedOpenAIServer, *replies: Reply) -> None:
    queue = list(replies)
    server.responder = lambda request: queue.pop(0) if queue else Reply.error(500, "script exhausted")


# --- the loop ------------------------------------------------------------------------------------


def test_tool_loop_writes_a_real_file_then_answers(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    def responder(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.tool_calls([("write_file", {"path": "out/result.txt", "content": request.first_user_text})],
                                    text="Writing it.")
        assert request.last_tool_results[0]["content"] == "wrote 11 bytes to out/result.txt"
        return Reply.text("saved")

    server.responder = responder
    unit = Unit(tmp_path, prompt="hello world")
    outcome = run(server.url, unit)
    assert outcome.ok, outcome.error
    assert outcome.output == "saved" and outcome.turns == 2
    assert (tmp_path / "out" / "result.txt").read_text() == "hello world"
    assert unit.kinds == ["usage", "assistant", "tool_use", "tool_result", "usage", "assistant", "result"]
    tool_use, tool_result = unit.of("tool_use")[0], unit.of("tool_result")[0]
    assert tool_use["name"] == "write_file" and tool_use["input"]["path"] == "out/result.txt"
    assert tool_result == {"tool_use_id": tool_use["id"], "content": "wrote 11 bytes to out/result.txt",
                           "is_error": False}
    first = server.requests[0]
    assert first.headers["authorization"] == "Bearer not-needed"  # local server, no key set
    assert first.body["messages"][0]["role"] == "system"
    assert str(tmp_path) in first.body["messages"][0]["content"]
    assert [t["function"]["name"] for t in first.tools] == ["read_file", "write_file", "list_dir", "search_files"]
    assert not unit.tracker.active


def test_tokens_and_cost_add_up_with_a_price_override(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    script(server, Reply.tool_calls([("list_dir", {})], usage=(1000, 500)), Reply.text("ok", usage=(2000, 100)))
    unit = Unit(tmp_path)
    outcome = run(server.url, unit, model="my-local-model", price_in=1.0, price_out=2.0)
    assert (outcome.tokens_in, outcome.tokens_out) == (3000, 600)
    assert outcome.cost_usd == pytest.approx((3000 * 1.0 + 600 * 2.0) / 1e6)
    assert sum(u["cost"] for u in unit.of("usage")) == pytest.approx(outcome.cost_usd)
    assert unit.of("result")[0] == {"cost": pytest.approx(outcome.cost_usd), "tokens_in": 3000,
                                    "tokens_out": 600, "turns": 2, "is_error": False, "text": "ok"}
    assert not unit.of("warning")
    assert unit.gate.after == [1500, 2100] and len(unit.gate.before) == 2 and unit.gate.before[0] > 0


def test_cost_sums_carry_no_float_noise(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    """0.0001 + 0.00018 is 0.00028000000000000003 in floats; that noise reached events and exports."""
    script(server, Reply.tool_calls([("list_dir", {})], usage=(100, 0)), Reply.text("ok", usage=(180, 0)))
    unit = Unit(tmp_path)
    outcome = run(server.url, unit, model="my-local-model", price_in=1.0, price_out=0.0)
    assert repr(outcome.cost_usd) == "0.00028" and repr(unit.of("result")[0]["cost"]) == "0.00028"


def test_table_price_and_unknown_model_warns_once(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    assert table_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert table_price("openai/gpt-4o") == (2.50, 10.00)
    assert table_price("claude-sonnet-4-5-20250929") == (3.00, 15.00)
    assert table_price("llama3.1:8b") is None
    assert table_price("gpt-5.5") is None  # a newer family is not priced as gpt-5
    assert table_price("gpt-4.1-mini-2025-04-14") == (0.40, 1.60)
    assert table_price("claude-opus-4-7") == (5.00, 25.00)
    worker = KIND.build({"model": "llama3.1:8b", "base_url": server.url, "http_client": HTTP_CLIENT["choice"]})
    units = [Unit(tmp_path), Unit(tmp_path)]

    async def go() -> list[UnitOutcome]:
        return [await worker.run(u.ctx) for u in units]

    outcomes = asyncio.run(go())
    assert all(o.ok and o.cost_usd == 0.0 for o in outcomes)
    warnings = units[0].of("warning") + units[1].of("warning")
    assert len(warnings) == 1 and "unknown" in warnings[0]["message"]


def test_tool_errors_go_back_to_the_model(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    seen: list[str] = []

    def responder(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.tool_calls([("read_file", {"path": "../../etc/passwd"}), ("no_such_tool", {})])
        seen.extend(r["content"] for r in request.last_tool_results)
        return Reply.text("gave up")

    server.responder = responder
    unit = Unit(tmp_path)
    assert run(server.url, unit).output == "gave up"
    assert seen[0].startswith("Error: path '../../etc/passwd' may not contain '..'")
    assert seen[1].startswith("Error: unknown tool 'no_such_tool'")
    assert [r["is_error"] for r in unit.of("tool_result")] == [True, True]


def test_feedback_and_commands_reach_the_request(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    script(server, Reply.tool_calls([("run_command", {"argv": [sys.executable, "-c", "print(6*7)"]})]),
           Reply.text("42"))
    unit = Unit(tmp_path, prompt="compute", feedback="output was not JSON")
    outcome = run(server.url, unit, allow_commands=True, temperature=0.2, max_tokens=50)
    assert outcome.output == "42"
    body = server.requests[0].body
    assert "output was not JSON" in server.requests[0].first_user_text
    assert "run_command" in [t["function"]["name"] for t in body["tools"]]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert "exit code: 0" in unit.of("tool_result")[0]["content"]
    assert "42" in unit.of("tool_result")[0]["content"]


def test_max_turns_is_a_permanent_failure(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.responder = lambda request: Reply.tool_calls([("list_dir", {})])
    unit = Unit(tmp_path)
    outcome = run(server.url, unit, max_turns=3)
    assert outcome.error == "max turns (3) reached without a final answer"
    assert outcome.error_class is ErrorClass.permanent
    assert outcome.turns == 3 and len(server.requests) == 3
    assert len(unit.of("tool_result")) == 2  # the last turn's tools are not run
    assert unit.of("result")[0]["is_error"] is True


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "error_class", "retry_after", "text"), [
    (Reply.error(429, "Rate limit reached for gpt-4o-mini", {"retry-after": "7"}), ErrorClass.retryable, 7.0,
     "HTTP 429"),
    (Reply.error(500, "The server had an error"), ErrorClass.retryable, None, "HTTP 500"),
    (Reply.error(503, "overloaded", {"retry-after-ms": "1500"}), ErrorClass.retryable, 1.5, "HTTP 503"),
    (Reply.error(401, "Incorrect API key provided"), ErrorClass.permanent, None, "Incorrect API key"),
    (Reply.error(400, "messages: invalid"), ErrorClass.permanent, None, "HTTP 400"),
    (Reply.error(429, "You exceeded your current quota, please check your plan and billing details.",
                 error_type="insufficient_quota", code="insufficient_quota"), ErrorClass.quota, None, "quota"),
    (Reply.malformed(), ErrorClass.retryable, None, "malformed"),
])
def test_errors_are_classified(server: ScriptedOpenAIServer, tmp_path: Path, reply: Reply,
                               error_class: ErrorClass, retry_after: float | None, text: str) -> None:
    script(server, reply)
    unit = Unit(tmp_path)
    outcome = run(server.url, unit)
    assert not outcome.ok
    assert outcome.error_class is error_class, outcome.error
    assert outcome.retry_after == retry_after
    assert text in (outcome.error or "")
    assert len(server.requests) == 1  # SDK retries are off: the engine owns retries
    assert unit.of("result")[0]["is_error"] is True
    assert unit.gate.after == [0]


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    outcome = run("http://127.0.0.1:9/v1", Unit(tmp_path))
    assert outcome.error_class is ErrorClass.retryable and "connection error" in (outcome.error or "")


def test_server_rpm_limit_gives_retryable_with_retry_after(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(rpm_limit=2) as srv:
        outcomes = [run(srv.url, Unit(tmp_path)) for _ in range(3)]
        assert [o.ok for o in outcomes] == [True, True, False]
        assert outcomes[2].error_class is ErrorClass.retryable
        assert outcomes[2].retry_after is not None and 50 <= outcomes[2].retry_after <= 60
        assert srv.request_count == 3 and srv.rate_limited_count == 1 and len(srv.requests) == 2


def test_a_hung_request_is_cancelled_promptly(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    script(server, Reply.hang(30))
    unit = Unit(tmp_path)
    worker = KIND.build({"model": "gpt-4o-mini", "base_url": server.url, "http_client": HTTP_CLIENT["choice"]})

    async def go() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.run(unit.ctx), timeout=0.5)
        await worker.aclose()  # type: ignore[attr-defined]

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 3
    assert unit.gate.after == [0] and not unit.tracker.active


def test_the_request_timeout_follows_the_unit_timeout(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    script(server, Reply.hang(30))
    started = time.monotonic()
    outcome = run(server.url, Unit(tmp_path, timeout=0.5))
    assert time.monotonic() - started < 3
    assert outcome.error_class is ErrorClass.retryable and "timed out" in (outcome.error or "")


def test_streaming_replies_parse_with_the_sdk(server: ScriptedOpenAIServer) -> None:
    import openai

    async def go() -> str:
        async with openai.AsyncOpenAI(api_key="x", base_url=server.url, max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                          stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(go()) == "echo: hi"


# --- options and checks --------------------------------------------------------------------------


def test_options_are_strict_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="bogus"):
        KIND.parse_options({"model": "gpt-4o", "bogus": 1})
    with pytest.raises(InvalidSpec, match="model"):
        KIND.parse_options({})
    with pytest.raises(InvalidSpec, match="NAME of an environment variable"):
        KIND.parse_options({"model": "gpt-4o", "api_key_env": "sk-proj-abc123"})
    with pytest.raises(InvalidSpec, match="http"):
        KIND.parse_options({"model": "gpt-4o", "base_url": "localhost:11434"})
    assert KIND.check is not None
    remote = KIND.parse_options({"model": "gpt-4o", "api_key_env": "ABP_TEST_KEY"})
    with pytest.raises(InvalidSpec, match="ABP_TEST_KEY"):
        KIND.check(remote, "p", tmp_path)
    monkeypatch.setenv("ABP_TEST_KEY", "sk-test")
    KIND.check(remote, "p", tmp_path)
    KIND.check(KIND.parse_options({"model": "llama3", "base_url": "http://localhost:11434/v1"}), "p", tmp_path)
    missing = KIND.parse_options({"model": "gpt-4o", "base_url": "http://127.0.0.1:1/v1",
                                  "mcp_config": str(tmp_path / "nope.json")})
    with pytest.raises(InvalidSpec, match="does not exist"):
        KIND.check(missing, "p", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidSpec, match="not readable JSON"):
        KIND.check(missing.model_copy(update={"mcp_config": str(tmp_path / "bad.json")}), "p", tmp_path)


def test_missing_key_at_run_time_is_permanent(tmp_path: Path) -> None:
    unit = Unit(tmp_path)
    outcome = run("https://api.example.invalid/v1", unit, api_key_env="ABP_TEST_NO_SUCH_KEY")
    assert outcome.error_class is ErrorClass.permanent and "ABP_TEST_NO_SUCH_KEY" in (outcome.error or "")


def test_missing_sdk_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    options = KIND.parse_options({"model": "gpt-4o", "base_url": "http://127.0.0.1:1/v1", "http_client": "sdk"})
    with pytest.raises(InvalidSpec) as info:
        KIND.check(options, "p", tmp_path)
    assert "agentic-batch[openai]" in info.value.one_line()
    outcome = asyncio.run(KIND.factory(options).run(Unit(tmp_path).ctx))
    assert outcome.error_class is ErrorClass.permanent and "agentic-batch[openai]" in (outcome.error or "")
    KIND.check(options.model_copy(update={"http_client": "auto"}), "p", tmp_path)  # the lean path needs no SDK


def test_auto_falls_back_to_httpx_and_says_when_neither_is_there(monkeypatch: pytest.MonkeyPatch,
                                                                  server: ScriptedOpenAIServer,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.setitem(sys.modules, "openai", None)
    worker = KIND.build({"model": "gpt-4o-mini", "base_url": server.url})

    async def go() -> UnitOutcome:
        try:
            return await worker.run(Unit(tmp_path).ctx)
        finally:
            await worker.aclose()  # type: ignore[attr-defined]

    assert asyncio.run(go()).ok and worker._choice == "httpx"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "httpx", None)
    options = KIND.parse_options({"model": "gpt-4o", "base_url": server.url})
    with pytest.raises(InvalidSpec, match="neither aiohttp nor httpx") as info:
        KIND.check(options, "p", tmp_path)
    assert "agentic-batch[openai]" in info.value.one_line()
    with pytest.raises(InvalidSpec) as info:
        KIND.check(options.model_copy(update={"http_client": "aiohttp"}), "p", tmp_path)
    assert "aiohttp is not installed" in info.value.one_line() and "agentic-batch[aiohttp]" in info.value.one_line()
    outcome = asyncio.run(KIND.factory(options).run(Unit(tmp_path).ctx))
    assert outcome.error_class is ErrorClass.permanent and "neither aiohttp nor httpx" in (outcome.error or "")


def test_importing_the_worker_does_not_import_the_sdk() -> None:
    code = ("import sys, agentic_batch.workers.openai_chat, agentic_batch.workers.anthropic_messages; "
            "print(sorted(m for m in ('openai', 'anthropic', 'mcp', 'aiohttp', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"
