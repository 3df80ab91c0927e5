"""Exec shim that puts the SDK-spawned Claude Code CLI in its own process group, tied to its parent.

The claude-agent-sdk spawns the CLI itself (no `start_new_session`, no `preexec_fn`), so the worker
points `ClaudeAgentOptions.cli_path` at a tiny generated `sh` script. On Linux with util-linux that
script does these steps itself (`claude_process.launcher_script`); elsewhere it `exec`s this file
with `python -I -S`. Because every step `exec`s, the pid the SDK sees *is* the CLI's pid. Before the
final exec we:

1. `setsid()`: the CLI becomes leader of a new session and process group, so a timeout can kill it
   and every tool process it started (Bash, MCP servers) with one `killpg`;
2. `prctl(PR_SET_PDEATHSIG, SIGTERM)`: the kernel signals the CLI when the executor dies (the
   setting survives `execve`), and we check the parent did not die before the call took effect.
   SIGTERM, not SIGKILL: the CLI runs Bash tools in sessions of their own, and only a CLI that
   gets to run its SIGTERM handler kills those too (measured: it exits within ~1 s, tools gone);
3. write our pid to `$ABP_CLAUDE_PID_FILE`, so the worker can register the group with the engine.

Runs with `-I -S` (no site, no user env) and imports only the standard library: it must start fast
and must not depend on the environment the agent will see. The `ABP_CLAUDE_*` variables are removed
before the exec so they do not leak into the agent's tools.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PID_FILE_ENV = "ABP_CLAUDE_PID_FILE"
REAL_CLI_ENV = "ABP_CLAUDE_REAL_CLI"
PARENT_PID_ENV = "ABP_CLAUDE_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    real_cli = env.pop(REAL_CLI_ENV, "")
    pid_file = env.pop(PID_FILE_ENV, "")
    parent = env.pop(PARENT_PID_ENV, "")
    if not real_cli:
        sys.stderr.write(f"claude launcher: {REAL_CLI_ENV} is not set\n")
        sys.exit(127)
    try:
        os.setsid()
    except OSError:
        pass  # already a group leader (started with start_new_session): nothing to do
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if parent and os.getppid() != int(parent):
            sys.exit(1)  # the executor died before the death signal was armed
    if pid_file:
        tmp = f"{pid_file}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            os.replace(tmp, pid_file)
        except OSError as exc:  # the unit can still run; only the timeout kill loses its target
            sys.stderr.write(f"claude launcher: cannot write pid file {pid_file}: {exc}\n")
    try:
        os.execve(real_cli, [real_cli, *argv], env)
    except OSError as exc:
        sys.stderr.write(f"claude launcher: cannot execute {real_cli}: {exc}\n")
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
