"""The `mcp` worker against a real MCP server (tests/fixtures/mcp_unit_server.py, the SDK's MCPServer
in a subprocess), stdio and streamable HTTP: what a unit gets from each kind of tool result, one
session shared by the units, a timeout that cancels the call and not the session, a server that dies
and is started again, and nothing left running once the worker is closed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome, Worker
from agentic_batch.workers.process import SharedProcesses
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures.mcp_servers import alive, group_alive, http_server, started_pids, stdio_server, write_config
from tests.fixtures.tracking import SetTracker

pytestmark = pytest.mark.timeout(120)

KIND = get_worker_kind("mcp")


def make_ctx(tmp_path: Path, payload: dict[str, Any], shared: SharedProcesses, seq: int = 1,
             events: list[tuple[str, dict[str, Any]]] | None = None) -> UnitContext:
    sink = events if events is not None else []
    return UnitContext(job_id=1, job_name="mcp", unit_id=seq, key=str(seq), seq=seq, attempt=1, prompt=None,
                       payload=payload, source_kind="jsonl", workspace=tmp_path, allowed_dirs=[tmp_path],
                       timeout=30.0, emit=lambda kind, data: sink.append((kind, data)), processes=SetTracker(),
                       workdir=tmp_path, shared_processes=shared,
                       template_vars={"unit": {"id": seq, "key": str(seq), "seq": seq, "attempt": 1}})


def stdio_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "servers.json", {"units": stdio_server(pid_dir=tmp_path / "pids")})


def build(config: Path, tool: str, arguments: dict[str, Any], **options: Any) -> Worker:
    return KIND.build({"mcp_config": str(config), "tool": tool, "arguments": arguments, **options})


async def run_and_close(worker: Worker, ctxs: list[UnitContext]) -> list[UnitOutcome]:
    try:
        return list(await asyncio.gather(*(worker.run(ctx) for ctx in ctxs)))
    finally:
        await worker.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    (tmp_path / "pids").mkdir()
    return tmp_path / "pids"


def test_units_share_one_stdio_session_and_closing_stops_the_server(tmp_path: Path, pid_dir: Path) -> None:
    shared = SharedProcesses()
    worker = build(stdio_config(tmp_path), "units.shout", {"text": "{{ word }}", "times": "{{ n }}"},
                   max_concurrent_calls=2)
    ctxs = [make_ctx(tmp_path, {"word": f"w{i}", "n": i}, shared, seq=i) for i in range(1, 7)]
    outcomes = asyncio.run(run_and_close(worker, ctxs))

    assert [o.output for o in outcomes] == [" ".join([f"W{i}"] * i) for i in range(1, 7)]  # n kept its type
    assert all(o.ok for o in outcomes)
    assert outcomes[1].data == {"result": "W2 W2"}  # structuredContent, as the server sent it
    pids = started_pids(pid_dir)
    assert len(pids) == 1  # one server for all six units
    assert pids[0] not in shared.groups and not shared.groups  # registered while it ran, then forgotten
    assert not alive(pids[0]) and not group_alive(pids[0])


def test_text_structured_content_and_is_error(tmp_path: Path, pid_dir: Path) -> None:
    (tmp_path / "a.txt").write_text("one two three\nfour\n")
    config, shared = stdio_config(tmp_path), SharedProcesses()
    counted = asyncio.run(run_and_close(build(config, "units.count_words", {"path": "{{ path }}"}),
                                        [make_ctx(tmp_path, {"path": str(tmp_path / "a.txt")}, shared)]))[0]
    assert counted.ok and counted.data == {"path": str(tmp_path / "a.txt"), "words": 4, "lines": 2}
    assert '"words": 4' in (counted.output or "")

    events: list[tuple[str, dict[str, Any]]] = []
    refused = asyncio.run(run_and_close(build(config, "units.refuse", {"reason": "no {{ what }}"}),
                                        [make_ctx(tmp_path, {"what": "way"}, shared, events=events)]))[0]
    assert refused.error_class == ErrorClass.permanent and refused.error_kind == FailureKind.tool_error
    assert "units.refuse returned an error" in (refused.error or "") and "no way" in (refused.error or "")
    assert ("tool_use", {"name": "units.refuse", "input": {"reason": "no way"}}) in events
    assert ("tool_result", {"content": "Error executing tool refuse: no way", "is_error": True}) in events


def test_a_timeout_cancels_the_call_and_the_session_goes_on(tmp_path: Path, pid_dir: Path) -> None:
    shared = SharedProcesses()
    sleeper = build(stdio_config(tmp_path), "units.sleep", {"seconds": "{{ seconds }}"})

    async def go() -> tuple[bool, list[UnitOutcome]]:
        try:
            timed_out = False
            try:
                async with asyncio.timeout(2):  # as the engine's runner bounds an attempt
                    await sleeper.run(make_ctx(tmp_path, {"seconds": 60}, shared))
            except TimeoutError:
                timed_out = True
            after = [await sleeper.run(make_ctx(tmp_path, {"seconds": 0.01}, shared, seq=2))]
            return timed_out, after
        finally:
            await sleeper.aclose()  # type: ignore[attr-defined]

    timed_out, after = asyncio.run(go())
    assert timed_out
    assert after[0].ok and after[0].output == "slept 0.01"
    assert len(started_pids(pid_dir)) == 1  # the same server answered after the timeout


def test_a_server_killed_under_a_call_fails_it_retryably_and_is_started_again(tmp_path: Path,
                                                                              pid_dir: Path) -> None:
    shared = SharedProcesses()
    worker = build(stdio_config(tmp_path), "units.sleep", {"seconds": "{{ seconds }}"})

    async def go() -> tuple[UnitOutcome, UnitOutcome, UnitOutcome]:
        try:
            first = await worker.run(make_ctx(tmp_path, {"seconds": 0}, shared))
            hanging = asyncio.create_task(worker.run(make_ctx(tmp_path, {"seconds": 60}, shared, seq=2)))
            await asyncio.sleep(0.5)  # the call is in flight
            os.kill(started_pids(pid_dir)[0], signal.SIGKILL)
            killed = await hanging
            again = await worker.run(make_ctx(tmp_path, {"seconds": 0}, shared, seq=3))
            return first, killed, again
        finally:
            await worker.aclose()  # type: ignore[attr-defined]

    first, killed, again = asyncio.run(go())
    assert first.ok
    assert killed.error_class == ErrorClass.retryable and killed.error_kind == FailureKind.connection, killed
    assert again.ok, again.error
    pids = started_pids(pid_dir)
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def test_a_server_that_died_between_units_is_started_again_before_the_next_call(tmp_path: Path,
                                                                               pid_dir: Path) -> None:
    shared = SharedProcesses()
    events: list[tuple[str, dict[str, Any]]] = []
    worker = build(stdio_config(tmp_path), "units.whoami", {})

    async def go() -> tuple[UnitOutcome, UnitOutcome]:
        try:
            first = await worker.run(make_ctx(tmp_path, {}, shared))
            os.kill(int(first.output or 0), signal.SIGKILL)
            while alive(int(first.output or 0)):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the child watcher records its exit
            return first, await worker.run(make_ctx(tmp_path, {}, shared, seq=2, events=events))
        finally:
            await worker.aclose()  # type: ignore[attr-defined]

    first, second = asyncio.run(go())
    assert second.ok and second.output != first.output  # answered by a new server, no attempt lost
    assert [int(first.output or 0), int(second.output or 0)] == started_pids(pid_dir)
    assert ("warning", {"message": "MCP server 'units' is gone; starting it again"}) in events


def test_streamable_http_server_shared_and_reconnected_after_it_restarts(tmp_path: Path) -> None:
    shared = SharedProcesses()
    with http_server() as (url, proc):
        config = write_config(tmp_path / "http.json", {"web": {"type": "http", "url": url}})
        options = {"mcp_config": str(config), "tool": "web.shout", "arguments": {"text": "{{ word }}"}}
        KIND.sample_check(KIND.parse_options(options), [{"word": "a"}], [None], tmp_path)  # lists over HTTP
        worker = KIND.build(options)
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        async def go() -> list[UnitOutcome]:
            try:
                outcomes = list(await asyncio.gather(*(worker.run(make_ctx(tmp_path, {"word": w}, shared, seq=i))
                                                       for i, w in enumerate(["x", "y", "z"]))))
                proc.kill()
                await asyncio.to_thread(proc.wait)
                outcomes.append(await worker.run(make_ctx(tmp_path, {"word": "gone"}, shared, seq=4)))
                with http_server(port=port):
                    outcomes.append(await worker.run(make_ctx(tmp_path, {"word": "back"}, shared, seq=5)))
                return outcomes
            finally:
                await worker.aclose()  # type: ignore[attr-defined]

        outcomes = asyncio.run(go())
    assert [o.output for o in outcomes[:3]] == ["X", "Y", "Z"]
    assert outcomes[3].error_class == ErrorClass.retryable, outcomes[3]
    assert outcomes[3].error_kind == FailureKind.connection and "MCP server 'web'" in (outcomes[3].error or "")
    assert outcomes[4].ok and outcomes[4].output == "BACK", outcomes[4]


def test_create_time_checks_list_the_tool_and_validate_the_rendered_arguments(tmp_path: Path,
                                                                              pid_dir: Path) -> None:
    config = stdio_config(tmp_path)

    def check(tool: str, arguments: dict[str, Any], items: list[dict[str, Any]]) -> None:
        options = KIND.parse_options({"mcp_config": str(config), "tool": tool, "arguments": arguments})
        assert KIND.check is not None and KIND.sample_check is not None
        KIND.check(options, None, tmp_path)
        KIND.sample_check(options, items, [None] * len(items), tmp_path)

    check("units.shout", {"text": "{{ w }}", "times": "{{ n }}"}, [{"w": "a", "n": 1}, {"w": "b", "n": 2}])
    with pytest.raises(InvalidSpec, match=r"item #1 do not match .*times: '2' is not of type 'integer'"):
        check("units.shout", {"text": "{{ w }}", "times": "{{ n }}"}, [{"w": "a", "n": 1}, {"w": "b", "n": "2"}])
    with pytest.raises(InvalidSpec, match=r"'text' is a required property"):
        check("units.shout", {"times": 2}, [{"w": "a"}])
    with pytest.raises(InvalidSpec, match=r"server 'units' has no tool 'yell' \(it has: count_words, refuse, "
                                          r"shout, sleep, whoami\)"):
        check("units.yell", {}, [{"w": "a"}])
    with pytest.raises(InvalidSpec, match=r"value 'text' \(item #0\) uses 'word' but the item has no field"):
        check("units.shout", {"text": "{{ word }}"}, [{"w": "a"}])
    with pytest.raises(InvalidSpec, match=r"has no server 'other' \(servers: units\)"):
        check("other.shout", {}, [{"w": "a"}])
    assert not any(alive(pid) for pid in started_pids(pid_dir))  # each listing stopped its server

    refused = write_config(tmp_path / "refused.json", {"web": {"url": "http://127.0.0.1:9/mcp"}})
    options = KIND.parse_options({"mcp_config": str(refused), "tool": "web.shout", "arguments": {}})
    with pytest.raises(InvalidSpec) as info:
        KIND.sample_check(options, [{}], [None], tmp_path)  # type: ignore[misc]
    assert info.value.message == ("worker_options.tool 'web.shout': cannot list the tools of MCP server 'web': "
                                  "ConnectError: All connection attempts failed")
    assert "\n" not in info.value.one_line()
