"""Starting agent processes so that nothing outlives its unit or its executor.

Each agent runs as the leader of a new session (so it and everything it starts share one process
group that a timeout kills at once), asks the kernel to SIGKILL it when its parent dies
(PR_SET_PDEATHSIG, Linux), and is registered with the unit's `ProcessTracker`, which the engine's
reaper uses to kill the whole group if the executor itself is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from agentic_batch.workers.base import ProcessTracker

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    """Runs in the child between fork and exec: die with the parent (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def pdeathsig_preexec() -> None:
    _set_parent_death_signal()


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    tracker: ProcessTracker,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
    limit: int = 2**20,
) -> asyncio.subprocess.Process:
    """Start `argv` (never through a shell) in its own session and register its group."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=pdeathsig_preexec,
        limit=limit,
    )
    tracker.add(proc.pid)  # session leader: its pid is the process group id
    return proc


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def terminate(proc: asyncio.subprocess.Process, tracker: ProcessTracker) -> None:
    """Kill the process and its group, reap it, and forget it."""
    kill_group(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), timeout=5)
    tracker.discard(proc.pid)
