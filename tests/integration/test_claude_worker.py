"""The `claude` worker against the real Claude Code CLI and a scripted model server on 127.0.0.1.

No mocks of the CLI: the SDK spawns the bundled `claude` binary, which runs real tools in a real
workspace, driven by scripted `tool_use` replies. Each test starts its own server and private HOME.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.config import load_settings
from agentic_batch.errors import InvalidSpec
from agentic_batch.testing import SetTracker
from agentic_batch.testing.anthropic_server import MessagesRequest, Reply, ScriptedConversation, scripted
from agentic_batch.testing.claude_env import ClaudeOffline, pid_alive, process_group_members
from agentic_batch.workers.base import ErrorClass, UnitContext
from agentic_batch.workers.registry import get_worker_kind
from tests.fixtures import claude_env as claude_fixtures
from tests.fixtures.claude_env import Events, needs_claude_cli, unit_context

pytestmark = pytest.mark.timeout(60)
offline_claude = claude_fixtures.offline_claude  # the fixture, registered in this module
Offline = Callable[..., ClaudeOffline]


def cli_test(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async test that runs the real CLI (skipped without the SDK)."""
    return needs_claude_cli(pytest.mark.asyncio(fn))


def make_ctx(tmp_path: Path, prompt: str, events: Events, tracker: SetTracker | None = None) -> UnitContext:
    return unit_context(tmp_path / "ws", prompt, events, tracker)


def build(**options: Any) -> Any:
    return get_worker_kind("claude").build(options)


def kinds(events: Events) -> list[str]:
    return [kind for _, kind, _ in events]


def assert_group_gone(tracker: SetTracker) -> None:
    assert tracker.seen, "the worker never registered the CLI's process group"
    assert not tracker.active
    for pgid in tracker.seen:
        assert not pid_alive(pgid), f"CLI {pgid} still alive"
        assert process_group_members(pgid) == []


@cli_test
async def test_write_tool_creates_file_and_streams_events(offline_claude: Offline,
                                                          tmp_path: Path) -> None:
    def respond(req: MessagesRequest) -> Any:
        return ScriptedConversation([
            Reply.tool_use("Write", {"file_path": f"{req.cwd}/answer.txt", "content": "42\n"},
                           text_before="Writing it.", usage=(100, 20)),
            Reply.thinking("the file is written; report back", "wrote answer.txt", usage=(150, 10)),
        ])(req)

    env = offline_claude(respond)
    events: Events = []
    tracker = SetTracker()
    ctx = make_ctx(tmp_path, "write the answer", events, tracker)
    outcome = await build().run(ctx)

    assert outcome.ok, outcome.error
    assert (ctx.workspace / "answer.txt").read_text() == "42\n"
    assert outcome.output == "wrote answer.txt"
    assert outcome.tokens_in == 250 and outcome.tokens_out == 30
    assert outcome.cost_usd > 0 and outcome.turns == 2 and outcome.session_id
    names = kinds(events)
    assert names[0] == "system" and names[-1] == "result"
    assert names.index("tool_use") < names.index("tool_result") < names.index("result")
    tool_use = next(d for _, k, d in events if k == "tool_use")
    assert tool_use["name"] == "Write" and tool_use["input"]["content"] == "42\n"
    assert next(d for _, k, d in events if k == "thinking")["text"] == "the file is written; report back"
    tool_result = next(d for _, k, d in events if k == "tool_result")
    assert tool_result["tool_use_id"] == tool_use["id"] and tool_result["is_error"] is False
    result = events[-1][2]
    assert result["cost"] == outcome.cost_usd and result["session_id"] == outcome.session_id
    assert [r.turn for r in env.server.message_requests()] == [0, 1]
    assert env.server.message_requests()[1].tool_results[0]["tool_use_id"] == tool_use["id"]
    assert_group_gone(tracker)


@cli_test
async def test_events_arrive_while_the_unit_runs(offline_claude: Offline, tmp_path: Path) -> None:
    offline_claude(scripted(ScriptedConversation(
        [Reply.tool_use("Read", {"file_path": "/etc/hostname"}), Reply.text("done", latency=3.0)],
        when="slow unit",
    )))
    events: Events = []
    run = asyncio.create_task(build().run(make_ctx(tmp_path, "a slow unit", events)))
    seen_while_running: list[str] = []
    while not run.done():
        if "tool_result" in kinds(events):
            seen_while_running = kinds(events)
            break
        await asyncio.sleep(0.05)
    assert not run.done(), f"the unit finished before any event was seen: {run.result()} {events}"
    assert {"system", "tool_use", "tool_result"} <= set(seen_while_running)
    assert "result" not in seen_while_running
    outcome = await run
    assert outcome.ok and outcome.output == "done"


@cli_test
@pytest.mark.parametrize("status", [500, 529, 429])
async def test_server_errors_are_retryable_without_cli_retries(
    offline_claude: Offline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    env = offline_claude(lambda req: Reply.error(status, headers={"retry-after": "1"}))
    # The worker itself must switch the CLI's retries off (it would retry 5xx ten times, minutes).
    monkeypatch.delenv("CLAUDE_CODE_MAX_RETRIES")
    started = time.monotonic()
    events: Events = []
    outcome = await build().run(make_ctx(tmp_path, "fails", events))
    elapsed = time.monotonic() - started
    assert outcome.error_class is ErrorClass.retryable, outcome.error
    assert str(status) in (outcome.error or "")
    assert env.server.count() == 1, "the CLI retried on its own"
    assert elapsed < 15
    assert kinds(events)[-1] == "result"


@cli_test
async def test_malformed_reply_is_retryable(offline_claude: Offline, tmp_path: Path) -> None:
    offline_claude(lambda req: Reply.malformed())
    outcome = await build().run(make_ctx(tmp_path, "garbled", []))
    assert outcome.error_class is ErrorClass.retryable, outcome.error


@cli_test
async def test_max_turns_is_permanent(offline_claude: Offline, tmp_path: Path) -> None:
    offline_claude(lambda req: Reply.tool_use("Read", {"file_path": "/etc/hostname"}))
    outcome = await build(max_turns=1).run(make_ctx(tmp_path, "loops forever", []))
    assert outcome.error_class is ErrorClass.permanent and "max_turns" in (outcome.error or "")


@cli_test
async def test_rejected_key_is_permanent_with_auth_hint(offline_claude: Offline,
                                                        tmp_path: Path) -> None:
    offline_claude(lambda req: Reply.error(401, message="invalid x-api-key"))
    outcome = await build().run(make_ctx(tmp_path, "who am i", []))
    assert outcome.error_class is ErrorClass.permanent
    assert "authenticate" in (outcome.error or "") and "ANTHROPIC_API_KEY" in (outcome.error or "")


@cli_test
async def test_missing_credentials_fail_before_spawning(offline_claude: Offline,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = offline_claude(lambda req: Reply.text("never"))
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    tracker = SetTracker()
    outcome = await build().run(make_ctx(tmp_path, "no key", [], tracker))
    assert outcome.error_class is ErrorClass.permanent
    assert "ANTHROPIC_API_KEY" in (outcome.error or "") and "CLAUDE_CODE_USE_BEDROCK" in (outcome.error or "")
    assert env.server.count(None) == 0 and tracker.seen == []


@cli_test
async def test_quota_message_pauses_with_retry_after(offline_claude: Offline, tmp_path: Path) -> None:
    reset = int(time.time()) + 3600
    offline_claude(lambda req: Reply.error(429, message=f"Claude AI usage limit reached|{reset}"))
    outcome = await build().run(make_ctx(tmp_path, "over quota", []))
    assert outcome.error_class is ErrorClass.quota, outcome.error
    assert outcome.retry_after is not None and 3500 < outcome.retry_after <= 3600


@cli_test
@pytest.mark.parametrize("hang", ["model-call", "bash-tool"])
async def test_timeout_kills_the_cli_and_its_tools(offline_claude: Offline, tmp_path: Path,
                                                   hang: str) -> None:
    def respond(req: MessagesRequest) -> Any:
        if hang == "model-call":
            return Reply.hang(120)
        sleeper = f"sh -c 'echo $$ > {req.cwd}/sleeper.pid; exec sleep 300'"
        return ScriptedConversation([Reply.tool_use("Bash", {"command": sleeper, "description": "sleep"})])(req)

    offline_claude(respond)
    tracker = SetTracker()
    ctx = make_ctx(tmp_path, "hang forever", [], tracker)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(build(allowed_tools="Bash").run(ctx), timeout=5)
    assert time.monotonic() - started < 8, "cancellation waited for the SDK's graceful shutdown"
    assert_group_gone(tracker)
    if hang == "bash-tool":  # Bash runs in a session of its own: killed through the process tree
        sleeper = int((ctx.workspace / "sleeper.pid").read_text())
        assert not pid_alive(sleeper)


@cli_test
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
async def test_cli_and_tools_die_with_the_executor(offline_claude: Offline, tmp_path: Path) -> None:
    env = offline_claude(scripted(ScriptedConversation([Reply.tool_use(
        "Bash", {"command": "sh -c 'echo $$ > sleeper.pid; exec sleep 300'", "description": "sleep"})])))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    executor = textwrap.dedent(f"""
        import asyncio, pathlib
        from agentic_batch.testing import SetTracker
        from agentic_batch.workers.base import UnitContext
        from agentic_batch.workers.registry import get_worker_kind
        ws = pathlib.Path({str(workspace)!r})
        ctx = UnitContext(job_id=1, job_name="j", unit_id=1, key="k", seq=1, attempt=1, prompt="sleep",
                          payload={{}}, source_kind="inline", workspace=ws, allowed_dirs=[ws], timeout=60,
                          emit=lambda k, d: None, processes=SetTracker())
        asyncio.run(get_worker_kind("claude").build({{"allowed_tools": "Bash"}}).run(ctx))
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", executor, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while not (workspace / "sleeper.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        sleeper = int((workspace / "sleeper.pid").read_text())
        cli = int(next(load_settings().run_dir.glob("claude-*.pid")).read_text())
        assert pid_alive(cli) and pid_alive(sleeper)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    deadline = time.monotonic() + 10
    while (pid_alive(cli) or pid_alive(sleeper)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not pid_alive(cli) and not pid_alive(sleeper)
    assert env.server.count() == 1


# --- a unit's slot is free at its result; the CLI's exit runs on in the background -------------------

#: A stand-in for a CLI that never exits after its result (the real one cannot be made to hang there):
#: it answers the SDK's initialize, reports one good result, starts a `sleep` in its process group,
#: then ignores stdin's end and SIGTERM.
STUCK_CLI = """\
import json, os, signal, subprocess, sys
def say(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    if message.get("type") == "control_request":
        say({"type": "control_response", "response": {"subtype": "success",
             "request_id": message["request_id"], "response": {}}})
    elif message.get("type") == "user":
        say({"type": "system", "subtype": "init", "session_id": "s1", "cwd": os.getcwd(), "tools": []})
        say({"type": "result", "subtype": "success", "is_error": False, "duration_ms": 5,
             "duration_api_ms": 5, "num_turns": 1, "session_id": "s1", "result": "done",
             "total_cost_usd": 0.001, "usage": {"input_tokens": 10, "output_tokens": 2}})
        break
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])
with open("child.pid", "w") as fh:
    fh.write(str(child.pid))
signal.pause()
"""


def stuck_cli(tmp_path: Path) -> Path:
    path = tmp_path / "stuck-claude"
    path.write_text(f"#!{sys.executable}\n{STUCK_CLI}")
    path.chmod(0o755)
    return path


@cli_test
async def test_a_good_result_frees_the_unit_while_the_cli_exits(offline_claude: Offline, tmp_path: Path) -> None:
    """With `defer_exit` (an executor's pool), the worker returns at the result and hands over the CLI's
    exit; the events are the same, and the CLI's group is gone once the tail has run."""
    offline_claude(scripted(ScriptedConversation([Reply.text("all done")])))
    events: Events = []
    tails: list[Any] = []
    tracker = SetTracker()
    ctx = make_ctx(tmp_path, "say done", events, tracker)
    ctx.defer_exit = tails.append
    outcome = await build().run(ctx)
    assert outcome.ok and outcome.output == "all done" and outcome.cost_usd > 0
    assert len(tails) == 1, "the worker waited for the CLI's exit"
    assert kinds(events)[-1] == "result"
    await tails[0](10.0)
    assert_group_gone(tracker)
    assert kinds(events)[-1] == "result"  # a good run prints nothing after its result


@cli_test
async def test_a_cli_that_never_exits_after_its_result_is_killed_after_the_grace(
        offline_claude: Offline, tmp_path: Path) -> None:
    offline_claude(scripted(ScriptedConversation([Reply.text("unused")])))
    tails: list[Any] = []
    tracker = SetTracker()
    ctx = make_ctx(tmp_path, "finish", [], tracker)
    ctx.defer_exit = tails.append
    outcome = await build(cli_path=str(stuck_cli(tmp_path))).run(ctx)
    assert outcome.ok and outcome.output == "done" and outcome.tokens_in == 10
    assert len(tails) == 1
    (cli,) = tracker.active
    assert pid_alive(cli), "the CLI is still there: the unit did not wait for it"
    child_pid = ctx.workspace / "child.pid"
    while not child_pid.exists():
        await asyncio.sleep(0.02)
    child = int(child_pid.read_text())
    await tails[0](0.5)
    assert_group_gone(tracker)
    assert not pid_alive(child)


@cli_test
async def test_without_defer_exit_the_worker_waits_for_the_cli(offline_claude: Offline, tmp_path: Path) -> None:
    """Outside a pool (`abp test`, the reduce step, a worker used directly) nothing is handed over: the
    stuck CLI is waited for until the attempt's timeout kills it."""
    offline_claude(scripted(ScriptedConversation([Reply.text("unused")])))
    tracker = SetTracker()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(build(cli_path=str(stuck_cli(tmp_path))).run(make_ctx(tmp_path, "x", [], tracker)),
                               timeout=3)
    assert_group_gone(tracker)


# --- options (no CLI run) ---------------------------------------------------------------------

@needs_claude_cli
def test_options_accept_comma_strings_and_single_dirs() -> None:
    opts = get_worker_kind("claude").parse_options(
        {"allowed_tools": "Read, Write", "disallowed_tools": "Bash", "add_dir": "/data", "max_turns": 3})
    assert opts.allowed_tools == ["Read", "Write"] and opts.disallowed_tools == ["Bash"]  # type: ignore[attr-defined]
    assert opts.add_dir == ["/data"] and opts.permission_mode == "acceptEdits"  # type: ignore[attr-defined]


@needs_claude_cli
@pytest.mark.parametrize("raw, words", [
    # the service speaks in field names; the CLI renders them as its flags (test_error_vocabulary)
    ({"max_turns": 0}, "worker_options.max_turns"),
    ({"max_budget_usd": 0}, "worker_options.max_budget_usd"),
    ({"permission_mode": "yolo"}, "worker_options.permission_mode"),
    ({"colour": "red"}, "colour"),
    ({"mcp_config": "/nonexistent/mcp.json"}, "cannot read"),
])
def test_bad_options_are_invalid_spec(raw: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        get_worker_kind("claude").parse_options(raw)
    assert words in err.value.message


@needs_claude_cli
def test_mcp_config_must_name_servers(tmp_path: Path) -> None:
    bad = tmp_path / "mcp.json"
    bad.write_text(json.dumps({"servers": {}}))
    with pytest.raises(InvalidSpec, match="mcpServers"):
        get_worker_kind("claude").parse_options({"mcp_config": str(bad)})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"mcpServers": {}}))
    assert get_worker_kind("claude").parse_options({"mcp_config": str(good)}).mcp_config == str(good)  # type: ignore[attr-defined]

