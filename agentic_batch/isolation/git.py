"""Running git: always an argv list (never a shell string), always `git -C DIR`, never a prompt.

Every call is synchronous and short; the engine runs them in a thread. A failure is a `GitError`
whose message is git's own last line, which is what a user needs to read.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: Identity and switches for commits made on the unit's branch: hooks, signing and the user's editor
#: have no place in an unattended commit, and a repository without user.name must still work.
COMMIT_CONFIG = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")
_IDENTITY = {"GIT_AUTHOR_NAME": "agentic-batch", "GIT_AUTHOR_EMAIL": "abp@localhost",
             "GIT_COMMITTER_NAME": "agentic-batch", "GIT_COMMITTER_EMAIL": "abp@localhost"}


class GitError(Exception):
    """A git command failed; `str()` is git's message (its last non-empty stderr line)."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        self.argv, self.returncode, self.stderr = argv, returncode, stderr
        super().__init__(lines[-1] if lines else f"git {' '.join(argv)} exited with {returncode}")


def _env(identity: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"  # messages parsed or shown are git's English ones
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):  # set by a hook that runs us: not ours
        env.pop(name, None)
    if identity:
        env.update(_IDENTITY)
    return env


def git(cwd: Path | str, *args: str, check: bool = True, identity: bool = False,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `git -C cwd ARGS` (with `input` on stdin, else none); raise GitError on a non-zero exit when `check`."""
    argv = ["git", "-C", str(cwd), *args]
    proc = subprocess.run(argv, capture_output=True, input=input, stdin=subprocess.DEVNULL if input is None else None,
                          env=_env(identity), check=False, text=True, encoding="utf-8", errors="replace")
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr)
    return proc


def git_out(cwd: Path | str, *args: str) -> str:
    """stdout of a git command that must succeed, without its trailing newline."""
    return git(cwd, *args).stdout.rstrip("\n")
