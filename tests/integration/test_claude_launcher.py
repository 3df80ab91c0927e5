"""The launchers that start the Claude Code CLI for the SDK: a new session, a parent-death signal, a
pid file, no `ABP_CLAUDE_*` variables for the agent, every argument passed through untouched.

Both launchers (util-linux `sh` and the `python -I -S` fallback) must behave the same; a stand-in
for the CLI (a shell script) reports what it got, so the launcher itself is what is under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentic_batch.testing.claude_env import pid_alive
from agentic_batch.workers import claude_launcher
from agentic_batch.workers.claude_process import _util_linux_tools, ensure_wrapper

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(os.name != "posix", reason="launchers are POSIX shell scripts")]

KINDS = [pytest.param("sh", marks=pytest.mark.skipif(_util_linux_tools() is None,
                                                     reason="util-linux setsid/setpriv not available")),
         "python"]

REPORTER = """#!/bin/sh
# Stands in for the Claude CLI: report pid, process group, session, parent, leftover variables, args.
{
  echo "pid=$$"
  echo "stat=$(cut -d')' -f2 /proc/$$/stat)"
  echo "abp_vars=$(env | grep -c '^ABP_CLAUDE_')"
  for arg in "$@"; do echo "arg=$arg"; done
} > "$REPORT"
"""


def launcher_env(real: Path, pid_file: Path, parent: int | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env[claude_launcher.REAL_CLI_ENV] = str(real)
    env[claude_launcher.PID_FILE_ENV] = str(pid_file)
    env[claude_launcher.PARENT_PID_ENV] = str(os.getpid() if parent is None else parent)
    return env


@pytest.fixture
def reporter(tmp_path: Path) -> Path:
    path = tmp_path / "fake-claude"
    path.write_text(REPORTER)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_launcher_execs_the_cli_in_a_new_session_with_the_same_pid(kind: str, tmp_path: Path,
                                                                    reporter: Path) -> None:
    wrapper = ensure_wrapper(tmp_path / "run", kind)
    report, pid_file = tmp_path / "report", tmp_path / "cli.pid"
    args = ["--print", "two words", "it's $(not run) `nor this`", "", "--end"]
    proc = subprocess.run([str(wrapper), *args], env=launcher_env(reporter, pid_file, REPORT=str(report)),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = report.read_text().splitlines()
    pid = int(lines[0].removeprefix("pid="))
    _state, ppid, pgrp, session = lines[1].removeprefix("stat=").split()[:4]
    assert pid_file.read_text() == f"{pid}\n"
    assert int(pgrp) == pid and int(session) == pid, "the CLI must lead a session and group of its own"
    assert int(ppid) == os.getpid(), "every step must exec: the CLI's parent is the process that spawned it"
    assert lines[2] == "abp_vars=0", "launcher variables leaked to the agent"
    assert [line.removeprefix("arg=") for line in lines[3:]] == args


@pytest.mark.parametrize("kind", KINDS)
def test_launcher_refuses_without_cli_or_after_parent_changed(kind: str, tmp_path: Path, reporter: Path) -> None:
    wrapper = ensure_wrapper(tmp_path / "run", kind)
    env = launcher_env(reporter, tmp_path / "pid", REPORT=str(tmp_path / "report"))
    del env[claude_launcher.REAL_CLI_ENV]
    proc = subprocess.run([str(wrapper)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 127 and claude_launcher.REAL_CLI_ENV in proc.stderr

    # The parent it was told about is not its parent: the executor died before the death signal
    # was armed, so the CLI must not start at all.
    env = launcher_env(reporter, tmp_path / "pid", parent=1, REPORT=str(tmp_path / "report"))
    proc = subprocess.run([str(wrapper)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert not (tmp_path / "report").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("kind", KINDS)
def test_cli_gets_sigterm_when_its_parent_dies(kind: str, tmp_path: Path) -> None:
    wrapper = ensure_wrapper(tmp_path / "run", kind)
    marker, pid_file, ready = tmp_path / "got-term", tmp_path / "cli.pid", tmp_path / "trap-set"
    cli = tmp_path / "fake-claude"
    # The launcher writes the pid file before it execs the CLI; the stand-in says when its handler is in
    # place, so killing the parent earlier (a loaded machine) is not mistaken for a missing signal.
    cli.write_text(f"#!/bin/sh\ntrap 'echo TERM > {marker}; exit 0' TERM\n: > {ready}\n"
                   "while :; do sleep 0.05; done\n")
    cli.chmod(0o755)
    # A stand-in executor: spawns the launcher (as the SDK does, no new session) and sleeps.
    parent_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        env = dict(os.environ, {claude_launcher.PARENT_PID_ENV}=str(os.getpid()))
        subprocess.Popen([{str(wrapper)!r}], env=env)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=launcher_env(cli, pid_file))
    try:
        deadline = time.monotonic() + 15
        while not (ready.exists() and pid_file.exists() and pid_file.read_text().endswith("\n")) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        cli_pid = int(pid_file.read_text())
        assert pid_alive(cli_pid) and ready.exists()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while pid_alive(cli_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(cli_pid), "the CLI outlived its parent"
    assert marker.read_text().strip() == "TERM", "the CLI must get SIGTERM (its handler kills its tools)"


def test_launcher_scripts_differ_by_kind_and_are_reused(tmp_path: Path) -> None:
    first = ensure_wrapper(tmp_path, "python")
    assert ensure_wrapper(tmp_path, "python") == first
    if _util_linux_tools() is not None:
        fast = ensure_wrapper(tmp_path, "sh")
        assert fast != first and "setpriv" in fast.read_text()
        assert ensure_wrapper(tmp_path) == fast, "the util-linux launcher is the default where it works"
