"""MCP tools for API-model workers: a real stdio MCP server (tests/fixtures/mcp_add_server.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.testing.openai_server import Reply, Request, ScriptedOpenAIServer
from agentic_batch.workers.base import ErrorClass, UnitContext
from agentic_batch.workers.mcp_tools import MCPStartError, load_mcp_config, mcp_tools, tool_name
from agentic_batch.workers.registry import get_worker_kind
from agentic_batch.workers.tools import Toolbox
from tests.fixtures.mcp_servers import alive, http_server, write_config
from tests.fixtures.tracking import SetTracker

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "mcp_add_server.py"


def make_ctx(workspace: Path, tracker: SetTracker, events: list[tuple[str, dict[str, Any]]] | None = None,
             ) -> UnitContext:
    sink = events if events is not None else []
    return UnitContext(job_id=1, job_name="mcp", unit_id=1, key="k", seq=1, attempt=1, prompt="add 2 and 3",
                       payload={}, source_kind="test", workspace=workspace, allowed_dirs=[workspace],
                       timeout=30.0, emit=lambda kind, data: sink.append((kind, data)), processes=tracker)


def calc_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "mcp.json", {"calc": {"command": sys.executable, "args": [str(SERVER)],
                                                          "env": {"ABP_TEST": "1"}}})


def test_stdio_server_tools_are_listed_called_and_stopped(tmp_path: Path) -> None:
    tracker = SetTracker()
    ctx = make_ctx(tmp_path, tracker)

    async def go() -> dict[str, Any]:
        async with mcp_tools(calc_config(tmp_path), ctx) as tools:
            box = Toolbox(tools)
            assert tracker.active  # registered with the unit's tracker while running
            return {
                "names": box.names,
                "schema": box.openai_tools()[0]["function"]["parameters"],
                "add": await box.call("mcp__calc__add", {"a": 2, "b": 3}),
                "bad": await box.call("mcp__calc__add", {"a": "two"}),
                "fail": await box.call("mcp__calc__fail", {"reason": "nope"}),
                "cwd": await box.call("mcp__calc__whereami", {}),
            }

    got = asyncio.run(go())
    assert got["names"] == ["mcp__calc__add", "mcp__calc__fail", "mcp__calc__whereami"]
    assert got["schema"]["required"] == ["a", "b"]
    assert (got["add"].content, got["add"].is_error) == ("5", False)
    assert got["bad"].is_error
    assert got["fail"].is_error
    assert got["cwd"].content == os.path.realpath(tmp_path)  # servers run in the unit's workspace
    assert tracker.seen and not tracker.active
    assert not alive(tracker.seen[0])


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="does not exist"):
        load_mcp_config(tmp_path / "missing.json")
    (tmp_path / "a.json").write_text("[1]")
    with pytest.raises(InvalidSpec, match="mcpServers"):
        load_mcp_config(tmp_path / "a.json")
    with pytest.raises(InvalidSpec, match="command"):
        load_mcp_config(write_config(tmp_path / "b.json", {"x": {"args": []}}))
    with pytest.raises(InvalidSpec, match="args"):
        load_mcp_config(write_config(tmp_path / "c.json", {"x": {"command": "x", "args": "a b"}}))
    with pytest.raises(InvalidSpec, match="unsupported type"):
        load_mcp_config(write_config(tmp_path / "d.json", {"x": {"type": "sse", "url": "http://x"}}))
    http = load_mcp_config(write_config(tmp_path / "e.json", {"web": {"url": "http://127.0.0.1:1/mcp"}}))
    assert http[0].url == "http://127.0.0.1:1/mcp"
    assert tool_name("my server", "do.it") == "mcp__my_server__do_it"
    assert len(tool_name("s" * 50, "t" * 50)) == 64


def test_a_missing_program_is_permanent(tmp_path: Path) -> None:
    config = write_config(tmp_path / "m.json", {"ghost": {"command": "abp-no-such-mcp-server"}})

    async def go() -> None:
        async with mcp_tools(config, make_ctx(tmp_path, SetTracker())):
            pass

    with pytest.raises(MCPStartError) as info:
        asyncio.run(go())
    assert info.value.error_class is ErrorClass.permanent and "abp-no-such-mcp-server" in info.value.message


def test_a_server_that_dies_at_start_fails_the_unit_retryably_with_its_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    crash = "import sys; sys.stderr.write('cannot open database\\n'); sys.exit(3)"
    config = write_config(tmp_path / "c.json", {
        "calc": {"command": sys.executable, "args": [str(SERVER)]},  # starts fine, then must be stopped
        "crashy": {"command": sys.executable, "args": ["-c", crash]},
    })
    tracker = SetTracker()
    with ScriptedOpenAIServer() as server:
        worker = get_worker_kind("openai").build({"model": "gpt-4o-mini", "base_url": server.url,
                                                  "mcp_config": str(config)})
        outcome = asyncio.run(worker.run(make_ctx(tmp_path, tracker)))
    assert outcome.error_class is ErrorClass.retryable
    assert "'crashy' failed to start" in (outcome.error or "") and "cannot open database" in (outcome.error or "")
    assert not server.requests
    assert len(tracker.seen) == 2 and not tracker.active
    assert not any(alive(pid) for pid in tracker.seen)


def test_openai_worker_uses_mcp_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def responder(request: Request) -> Reply:
        if request.turn == 0:
            assert "mcp__calc__add" in [t["function"]["name"] for t in request.tools]
            return Reply.tool_calls([("mcp__calc__add", {"a": 2, "b": 3})])
        return Reply.text(f"the sum is {request.last_tool_results[0]['content']}")

    events: list[tuple[str, dict[str, Any]]] = []
    tracker = SetTracker()
    with ScriptedOpenAIServer(responder) as server:
        worker = get_worker_kind("openai").build({"model": "gpt-4o-mini", "base_url": server.url,
                                                  "mcp_config": str(calc_config(tmp_path))})
        outcome = asyncio.run(worker.run(make_ctx(tmp_path, tracker, events)))
    assert outcome.ok, outcome.error
    assert outcome.output == "the sum is 5"
    assert [d["name"] for k, d in events if k == "tool_use"] == ["mcp__calc__add"]
    assert not tracker.active


def test_a_worker_cancelled_mid_unit_stops_its_mcp_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    tracker = SetTracker()
    with ScriptedOpenAIServer([Reply.hang(30)]) as server:
        worker = get_worker_kind("openai").build({"model": "gpt-4o-mini", "base_url": server.url,
                                                  "mcp_config": str(calc_config(tmp_path))})

        async def go() -> None:
            task = asyncio.create_task(worker.run(make_ctx(tmp_path, tracker)))
            deadline = time.monotonic() + 20
            while not server.requests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert tracker.active
            task.cancel()  # what asyncio.wait_for does on a unit timeout
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
    assert len(server.requests) == 1  # the MCP server had started and the model call was in flight
    assert tracker.seen and not tracker.active
    assert not alive(tracker.seen[0])


def test_streamable_http_server(tmp_path: Path) -> None:
    with http_server(SERVER) as (url, _):
        config = write_config(tmp_path / "h.json", {"web": {"type": "http", "url": url}})

        async def go() -> str:
            async with mcp_tools(config, make_ctx(tmp_path, SetTracker())) as tools:
                return (await Toolbox(tools).call("mcp__web__add", {"a": 20, "b": 22})).content

        assert asyncio.run(go()) == "42"
