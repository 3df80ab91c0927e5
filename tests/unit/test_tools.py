"""The built-in agent tools: confinement to the unit's directories, the file tools, run_command."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.workers.base import UnitContext
from agentic_batch.workers.tools import PathGuard, Toolbox, ToolError, ToolResult, builtin_tools
from tests.fixtures.tracking import SetTracker


def make_ctx(workspace: Path, allowed: list[Path] | None = None, tracker: SetTracker | None = None,
             timeout: float = 30.0) -> UnitContext:
    return UnitContext(job_id=1, job_name="tools", unit_id=1, key="k", seq=1, attempt=1, prompt="p",
                       payload={}, source_kind="test", workspace=workspace,
                       allowed_dirs=[workspace, *(allowed or [])], timeout=timeout,
                       emit=lambda kind, data: None, processes=tracker or SetTracker())


def toolbox(workspace: Path, **kwargs: Any) -> Toolbox:
    allowed = kwargs.pop("allowed", None)
    tracker = kwargs.pop("tracker", None)
    return Toolbox(builtin_tools(make_ctx(workspace, allowed, tracker), **kwargs))


def live_group_members(pgid: int, wait: float = 3.0) -> list[int]:
    """Pids still running (not zombies) in process group `pgid`, after waiting up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(stat.parent.name))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.05)


def call(box: Toolbox, name: str, **args: Any) -> ToolResult:
    return asyncio.run(box.call(name, args))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("top secret\n")
    return secret


# --- confinement ---------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_workspace(ws: Path) -> None:
    guard = PathGuard(ws, [ws])
    assert guard.resolve("a/b.txt", for_write=True) == Path(os.path.realpath(ws)) / "a" / "b.txt"
    assert guard.resolve(str(ws / "x")) == Path(os.path.realpath(ws)) / "x"


@pytest.mark.parametrize("path", ["../outside/secret.txt", "sub/../../outside/secret.txt", ".."])
def test_dotdot_is_refused_for_every_tool(ws: Path, outside: Path, path: str) -> None:
    box = toolbox(ws)
    for name, args in [("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"}),
                       ("list_dir", {"path": path}), ("search_files", {"pattern": "secret", "path": path})]:
        result = asyncio.run(box.call(name, args))
        assert result.is_error, (name, result)
        assert "'..'" in result.content
    assert (outside / "secret.txt").read_text() == "top secret\n"


def test_absolute_path_outside_is_refused(ws: Path, outside: Path) -> None:
    box = toolbox(ws)
    result = call(box, "read_file", path=str(outside / "secret.txt"))
    assert result.is_error and "outside the allowed directories" in result.content
    result = call(box, "write_file", path="/etc/abp-should-not-exist", content="x")
    assert result.is_error
    assert not Path("/etc/abp-should-not-exist").exists()


def test_symlinks_pointing_outside_are_refused(ws: Path, outside: Path) -> None:
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    (ws / "linkdir").symlink_to(outside, target_is_directory=True)
    box = toolbox(ws)
    assert call(box, "read_file", path="link.txt").is_error
    assert call(box, "read_file", path="linkdir/secret.txt").is_error
    assert call(box, "list_dir", path="linkdir").is_error
    assert call(box, "write_file", path="linkdir/new.txt", content="x").is_error
    assert call(box, "write_file", path="link.txt", content="overwritten").is_error
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "top secret\n"
    # a search from the workspace must not follow the links out either
    assert "secret" not in call(box, "search_files", pattern="top secret").content


def test_a_symlink_inside_the_workspace_is_fine(ws: Path) -> None:
    (ws / "real.txt").write_text("hello")
    (ws / "alias.txt").symlink_to(ws / "real.txt")
    assert call(toolbox(ws), "read_file", path="alias.txt").content == "hello"


def test_extra_allowed_dirs_are_reachable_by_absolute_path(ws: Path, outside: Path) -> None:
    box = toolbox(ws, allowed=[outside])
    assert call(box, "read_file", path=str(outside / "secret.txt")).content == "top secret\n"


# --- file tools ----------------------------------------------------------------------------------


def test_write_read_list_search(ws: Path) -> None:
    box = toolbox(ws)
    result = call(box, "write_file", path="notes/a.txt", content="alpha\nBeta 42\n")
    assert not result.is_error and result.content == "wrote 14 bytes to notes/a.txt"
    call(box, "write_file", path="notes/b.py", content="x = 'beta'\n")
    assert (ws / "notes" / "a.txt").read_text() == "alpha\nBeta 42\n"
    assert call(box, "read_file", path="notes/a.txt").content == "alpha\nBeta 42\n"
    assert call(box, "list_dir").content == "notes/"
    assert call(box, "list_dir", path="notes").content == "a.txt\nb.py"
    assert call(box, "search_files", pattern="beta").content == "notes/b.py:1: x = 'beta'"
    both = call(box, "search_files", pattern="beta", case_insensitive=True).content.splitlines()
    assert both == ["notes/a.txt:2: Beta 42", "notes/b.py:1: x = 'beta'"]
    assert call(box, "search_files", pattern=r"\d+$", regex=True).content == "notes/a.txt:2: Beta 42"
    assert call(box, "search_files", pattern="beta", glob="*.txt").content == "no matches"


def test_file_tool_errors_are_results_not_exceptions(ws: Path) -> None:
    box = toolbox(ws)
    assert "no such file" in call(box, "read_file", path="missing.txt").content
    assert call(box, "read_file", path=".").is_error
    assert "invalid regular expression" in call(box, "search_files", pattern="(", regex=True).content
    assert call(box, "write_file", path="x.txt").is_error  # content missing
    assert "unknown tool" in call(box, "nope").content


def test_search_output_is_bounded(ws: Path) -> None:
    (ws / "big.txt").write_text("match\n" * 1000)
    content = call(toolbox(ws), "search_files", pattern="match").content
    assert content.count("\n") == 200 and "stopped after 200 matches" in content


def test_read_is_bounded(ws: Path) -> None:
    (ws / "huge.txt").write_text("x" * 150_000)
    content = call(toolbox(ws), "read_file", path="huge.txt").content
    assert len(content) < 101_000 and "truncated" in content


def test_schema_formats() -> None:
    box = Toolbox(builtin_tools(make_ctx(Path("/tmp"))))
    names = [t["function"]["name"] for t in box.openai_tools()]
    assert names == ["read_file", "write_file", "list_dir", "search_files"]
    assert box.openai_tools()[1]["type"] == "function"
    assert box.openai_tools()[1]["function"]["parameters"]["required"] == ["path", "content"]
    anthropic = box.anthropic_tools()[0]
    assert set(anthropic) == {"name", "description", "input_schema"}
    assert anthropic["input_schema"]["type"] == "object"


# --- run_command ---------------------------------------------------------------------------------


def test_run_command_is_absent_unless_allowed(ws: Path) -> None:
    assert "run_command" not in toolbox(ws).names
    assert call(toolbox(ws), "run_command", argv=["true"]).is_error
    assert "run_command" in toolbox(ws, allow_commands=True).names


def test_run_command_argv_is_literal_never_a_shell(ws: Path) -> None:
    (ws / "sentinel").write_text("keep me")
    tracker = SetTracker()
    box = toolbox(ws, allow_commands=True, tracker=tracker)
    nasty = "x; rm -rf sentinel && echo pwned $(whoami)"
    result = call(box, "run_command", argv=[sys.executable, "-c", "import sys; print(sys.argv[1])", nasty])
    assert not result.is_error, result.content
    assert f"stdout:\n{nasty}\n" in result.content
    assert (ws / "sentinel").read_text() == "keep me"
    assert tracker.seen and not tracker.active  # registered while running, forgotten after


def test_run_command_reports_exit_code_and_stderr(ws: Path) -> None:
    box = toolbox(ws, allow_commands=True)
    result = call(box, "run_command",
                  argv=[sys.executable, "-c", "import os, sys; print(os.getcwd()); sys.exit('boom')"])
    assert result.is_error
    assert "exit code: 1" in result.content and "boom" in result.content
    assert os.path.realpath(ws) in result.content  # ran in the workspace
    missing = call(box, "run_command", argv=["abp-no-such-program"])
    assert missing.is_error and "command not found" in missing.content


def test_run_command_timeout_kills_the_group(ws: Path) -> None:
    tracker = SetTracker()
    box = toolbox(ws, allow_commands=True, tracker=tracker)
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
             "time.sleep(60)"
    result = call(box, "run_command", argv=[sys.executable, "-c", script], timeout=0.5)
    assert result.is_error and "timed out" in result.content
    assert not tracker.active
    assert not live_group_members(tracker.seen[0])  # the grandchild is gone too


def test_run_command_hides_secrets(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("ABP_TEST_PLAIN", "visible")
    box = toolbox(ws, allow_commands=True)
    code = "import os; print(os.environ.get('OPENAI_API_KEY'), os.environ.get('ABP_TEST_PLAIN'))"
    assert "None visible" in call(box, "run_command", argv=[sys.executable, "-c", code]).content


def test_run_command_rejects_a_shell_string(ws: Path) -> None:
    result = call(toolbox(ws, allow_commands=True), "run_command", argv="echo hi; rm -rf /")
    assert result.is_error and "array of strings" in result.content


def test_path_guard_error_type(ws: Path) -> None:
    with pytest.raises(ToolError):
        PathGuard(ws).resolve("")
