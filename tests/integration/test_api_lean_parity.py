"""The lean request path (aiohttp, httpx) against the SDK path: the same units, the same scripted
server replies, and everything the engine and the store see must come out the same: the requests
sent, the outcome (text, tokens, cost, turns), every event, and each failure's class, kind,
retry-after and message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.spec import JobSpec
from agentic_batch.testing import anthropic_server as ant
from agentic_batch.testing import openai_server as oai
from agentic_batch.workers.base import UnitContext, UnitOutcome
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures.abp import wait_status
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (the job test runs on SQLite and PostgreSQL)
from tests.fixtures.tracking import SetTracker

CLIENTS = ("sdk", "aiohttp", "httpx")
LEAN = ("aiohttp", "httpx")
OPENAI, ANTHROPIC = "openai", "anthropic"
MODELS = {OPENAI: "gpt-4o-mini", ANTHROPIC: "claude-sonnet-4-6"}


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ANTHROPIC_API_KEY",
                 "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


class Recorded:
    """A unit's events and outcome, with what differs between two runs by nature (none today) kept out."""

    def __init__(self, events: list[tuple[str, dict[str, Any]]], outcome: UnitOutcome) -> None:
        self.events, self.outcome = events, outcome

    def summary(self) -> dict[str, Any]:
        o = self.outcome
        return {"events": self.events, "output": o.output, "cost": o.cost_usd, "tokens": (o.tokens_in, o.tokens_out),
                "turns": o.turns, "error": o.error, "class": o.error_class, "kind": o.error_kind,
                "retry_after": o.retry_after}


def run_units(provider: str, client: str, url: str, workspace: Path, prompts: list[str], timeout: float = 30.0,
              **options: Any) -> list[Recorded]:
    """Run `prompts` one after the other (so the server's ids come in the same order every time) on one
    worker of `provider` using `client`, in one event loop, and close it."""
    worker = get_worker_kind(provider).build({"model": MODELS[provider], "base_url": url, "http_client": client,
                                              "price_in": 1.5, "price_out": 6.0, **options})

    async def go() -> list[Recorded]:
        done: list[Recorded] = []
        try:
            for i, prompt in enumerate(prompts):
                events: list[tuple[str, dict[str, Any]]] = []
                unit_dir = workspace / f"u{i}"
                ctx = UnitContext(job_id=1, job_name="t", unit_id=i + 1, key=f"k{i}", seq=i + 1, attempt=1,
                                  prompt=prompt, payload={}, source_kind="test", workspace=unit_dir,
                                  allowed_dirs=[unit_dir], timeout=timeout,
                                  emit=lambda kind, data, events=events: events.append((kind, data)),
                                  processes=SetTracker())
                done.append(Recorded(events, await worker.run(ctx)))
        finally:
            await worker.aclose()  # type: ignore[attr-defined]
        return done

    return asyncio.run(go())


def openai_agent(request: oai.Request) -> oai.Reply:
    """Turn 0: write a file and list the directory (with text); turn 1: answer from the tool results."""
    if request.turn == 0:
        return oai.Reply.tool_calls([("write_file", {"path": "a.txt", "content": request.first_user_text}),
                                     ("list_dir", {})], text="Writing.", usage=(1234, 56))
    listing = request.last_tool_results[1]["content"]
    return oai.Reply.text(f"done: {request.first_user_text} | {listing}", usage=(2345, 67))


def anthropic_agent(request: ant.MessagesRequest) -> ant.Reply:
    if request.turn == 0:
        return ant.Reply.tool_use("write_file", {"path": "a.txt", "content": request.first_user_text},
                                  text_before="Writing.", id=f"toolu_{request.first_user_text[-1]}", usage=(1234, 56))
    return ant.Reply.text(f"done: {request.first_user_text} | {request.tool_results[0]['text']}", usage=(2345, 67))


def served(provider: str, responder: Callable[..., Any], client: str, tmp_path: Path,
           prompts: list[str], **options: Any) -> tuple[list[Recorded], list[dict[str, Any]], list[dict[str, str]]]:
    """Run the prompts against a fresh scripted server; also return the bodies and headers it received."""
    workspace = tmp_path / client
    if provider == OPENAI:
        with oai.ScriptedOpenAIServer(responder) as srv:
            recorded = run_units(provider, client, srv.url, workspace, prompts, **options)
            requests = [(r.body, r.headers) for r in srv.requests]
    else:
        with ant.ScriptedAnthropicServer(responder) as asrv:
            recorded = run_units(provider, client, asrv.url, workspace, prompts, **options)
            requests = [(r.body, r.headers) for r in asrv.message_requests()]
    text = json.dumps([body for body, _ in requests]).replace(str(workspace), "<ws>")
    return recorded, json.loads(text), [headers for _, headers in requests]


@pytest.mark.parametrize(("provider", "responder"), [(OPENAI, openai_agent), (ANTHROPIC, anthropic_agent)])
def test_the_same_units_come_out_the_same_on_every_client(provider: str, responder: Callable[..., Any],
                                                          tmp_path: Path) -> None:
    prompts = ["first item 1", "second item 2", "third item 3"]
    # temperature too: the anthropic SDK installed here (2.14) no longer names it; it goes in extra_body
    options: dict[str, Any] = {"max_tokens": 300, "temperature": 0.3}
    runs = {client: served(provider, responder, client, tmp_path, prompts, **options) for client in CLIENTS}
    sdk_units, sdk_bodies, sdk_headers = runs["sdk"]
    assert all(u.outcome.ok and u.outcome.turns == 2 for u in sdk_units)
    assert sdk_units[0].outcome.cost_usd == pytest.approx((3579 * 1.5 + 123 * 6.0) / 1e6)
    assert [kind for kind, _ in sdk_units[0].events] == ["usage", "assistant", "tool_use", "tool_result",
                                                         *(["tool_use", "tool_result"] if provider == OPENAI else []),
                                                         "usage", "assistant", "result"]
    for client in LEAN:
        units, bodies, headers = runs[client]
        for lean, sdk in zip(units, sdk_units, strict=True):
            lean_summary, sdk_summary = lean.summary(), sdk.summary()
            lean_summary["events"] = json.loads(json.dumps(lean_summary["events"]).replace(f"/{client}/", "/sdk/"))
            sdk_summary["events"] = json.loads(json.dumps(sdk_summary["events"]))
            assert lean_summary == sdk_summary, client
        assert bodies == sdk_bodies, client  # the very same JSON requests, conversation and tools included
        for lean_h, sdk_h in zip(headers, sdk_headers, strict=True):
            if provider == OPENAI:
                assert lean_h["authorization"] == sdk_h["authorization"] == "Bearer not-needed"
            else:
                assert lean_h["x-api-key"] == "not-needed" and "anthropic-version" in lean_h
            assert lean_h["content-type"] == "application/json"


OPENAI_FAILURES = {
    "429 retry-after": oai.Reply.error(429, "Rate limit reached for gpt-4o-mini", {"retry-after": "7"}),
    "429 retry-after-ms": oai.Reply.error(429, "slow down", {"retry-after-ms": "1500"}),
    "500": oai.Reply.error(500, "The server had an error"),
    "503 no JSON": oai.Reply.error(503, ""),
    "insufficient_quota": oai.Reply.error(429, "You exceeded your current quota, please check your plan.",
                                          error_type="insufficient_quota", code="insufficient_quota"),
    "401": oai.Reply.error(401, "Incorrect API key provided"),
    "400": oai.Reply.error(400, "messages: invalid"),
    "malformed": oai.Reply.malformed(),
    "hang past the timeout": oai.Reply.hang(30),
}
ANTHROPIC_FAILURES = {
    "429 retry-after": ant.Reply.error(429, headers={"retry-after": "12"}),
    "529 overloaded": ant.Reply.error(529, message="Overloaded"),
    "500": ant.Reply.error(500),
    "usage limit": ant.Reply.error(429, message="Usage limit reached, resets in 2 hours"),
    "credit balance": ant.Reply.error(400, message="Your credit balance is too low to access the API."),
    "401": ant.Reply.error(401, message="invalid x-api-key"),
    "malformed": ant.Reply.malformed(),
    "hang past the timeout": ant.Reply.hang(30),
}


@pytest.mark.parametrize(("provider", "name"), [(OPENAI, n) for n in OPENAI_FAILURES] +
                         [(ANTHROPIC, n) for n in ANTHROPIC_FAILURES])
def test_each_failure_is_the_same_error_on_every_client(provider: str, name: str, tmp_path: Path) -> None:
    reply = (OPENAI_FAILURES if provider == OPENAI else ANTHROPIC_FAILURES)[name]
    seen = {client: served(provider, lambda request: reply, client, tmp_path, ["one"], timeout=0.5)[0][0].summary()
            for client in CLIENTS}
    assert seen["sdk"]["error"] and seen["sdk"]["class"] is not None and seen["sdk"]["kind"] is not None
    for client in LEAN:
        assert seen[client] == seen["sdk"], client


@pytest.mark.parametrize("provider", [OPENAI, ANTHROPIC])
def test_connection_refused_is_the_same_class_and_kind(provider: str, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/v1" if provider == OPENAI else "http://127.0.0.1:9"
    seen = {client: run_units(provider, client, url, tmp_path / client, ["one"])[0].summary() for client in CLIENTS}
    for client in CLIENTS:
        assert seen[client]["error"].startswith("connection error: "), seen[client]
        assert (seen[client]["class"], seen[client]["kind"]) == (seen["sdk"]["class"], seen["sdk"]["kind"])
        assert seen[client]["class"] == "retryable" and seen[client]["kind"] == "connection"


SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
          "required": ["title", "n"]}


def json_answer(request: oai.Request) -> oai.Reply:
    """Answers the JSON the schema asks for, from the unit's prompt ("Title: tN")."""
    title = request.first_user_text.split("Title: ", 1)[1].split()[0]
    return oai.Reply.text(json.dumps({"title": title, "n": int(title[1:])}), usage=(100 + len(title), 9))


def test_a_job_stores_the_same_results_events_and_costs_on_both_paths(orch: Any, workdir: Path) -> None:
    """Through the executor and the store (SQLite and PostgreSQL), with --output-schema."""
    rows = [{"id": i, "title": f"t{i}"} for i in range(8)]
    source = workdir / "items.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def job(client: str, url: str) -> int:
        spec = JobSpec(name=f"parity-{client}", source={"kind": "jsonl", "path": str(source), "key": "id"},
                       worker="openai", prompt="Title: {{ row.title }}", output_schema=SCHEMA, concurrency=4,
                       worker_options={"model": "gpt-4o-mini", "base_url": url, "http_client": client,
                                       "price_in": 2.0, "price_out": 8.0})
        job_id = orch.create(spec, cwd=workdir).job_id
        orch.start(job_id, skip_test=True)
        wait_status(orch, job_id, {"COMPLETED", "FAILED"})
        return job_id

    stored = {}
    for client in ("sdk", "auto"):
        with oai.ScriptedOpenAIServer(json_answer) as srv:
            job_id = job(client, srv.url)
            status = orch.status(job_id)
            results = [{k: v for k, v in r.items() if k not in ("job_id", "started_at", "finished_at", "duration_s")}
                       for r in orch.results(job_id)]
            events = [[(e.kind, {k: v for k, v in e.data.items() if k not in ("executor", "duration_s")})
                       for e in orch.events(job_id, n)] for n in range(1, len(rows) + 1)]
            stored[client] = (status.status, status.completed, status.cost_usd, status.tokens_in, status.tokens_out,
                              results, json.loads(json.dumps(events, default=str).replace(f"parity-{client}", "J")))
    assert stored["sdk"][:2] == ("COMPLETED", 8)
    assert stored["sdk"][2] == pytest.approx(sum((100 + len(f"t{i}")) * 2.0 + 9 * 8.0 for i in range(8)) / 1e6)
    assert [r["output"] for r in stored["sdk"][5]] == [json.dumps({"title": f"t{i}", "n": i}) for i in range(8)]
    assert stored["auto"] == stored["sdk"]


@pytest.mark.parametrize("client", CLIENTS)
def test_http_proxy_from_the_environment_is_used(client: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured as the SDK's httpx honours it: the scripted server stands in for the
    proxy (it answers the absolute-form request), so the API's own host need not exist; NO_PROXY wins."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-proxy")
    with oai.ScriptedOpenAIServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.root_url)
        unit = run_units(OPENAI, client, "http://api.example.invalid/v1", tmp_path / "a", ["via the proxy"])[0]
        assert unit.outcome.ok, unit.outcome.error
        assert proxy.requests[0].path == "http://api.example.invalid/v1/chat/completions"
        assert proxy.requests[0].headers["authorization"] == "Bearer sk-test-proxy"
        monkeypatch.setenv("NO_PROXY", "api.example.invalid")
        refused = run_units(OPENAI, client, "http://api.example.invalid/v1", tmp_path / "b", ["direct"])[0]
        assert refused.summary()["kind"] == "connection" and len(proxy.requests) == 1
