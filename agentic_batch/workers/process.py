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
import functools
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

from agentic_batch.workers.base import ProcessTracker

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    """Runs in the child between fork and exec: die with the parent (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def pdeathsig_preexec() -> None:
    _set_parent_death_signal()


def _child_setup(cgroup_procs: str | None) -> None:
    """Between fork and exec: die with the parent, and join the unit's cgroup (if it has one) so
    nothing this process starts can leave it. Joining is best effort: the unit token still traces it."""
    _set_parent_death_signal()
    if cgroup_procs:
        try:
            fd = os.open(cgroup_procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError:
            pass


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
    """Start `argv` (never through a shell) in its own session, in the unit's cgroup and with its
    marker in the environment, and register its group."""
    marker = tracker.child_env()
    cgroup_procs = tracker.cgroup_procs()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env={**(os.environ if env is None else env), **marker} if marker or env is not None else None,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=functools.partial(_child_setup, cgroup_procs),
        limit=limit,
    )
    tracker.add(proc.pid)  # session leader: its pid is the process group id
    return proc


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def exited(proc: asyncio.subprocess.Process, poll: float = 0.05) -> int:
    """Wait until the process itself has exited and return its code.

    Not `proc.wait()`: on Python 3.11 that also waits for every pipe to close, so a background child
    holding stdout (`sleep 100 & echo done`) would keep a finished command "running". A pidfd tells
    us the moment the process exits (Linux 5.3+); elsewhere we poll. The exit code appears once
    asyncio's child watcher has reaped it, a moment later.
    """
    if proc.returncode is None and hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            pidfd, poll = -1, 0.002  # already reaped: its code arrives in a moment
        except OSError:
            pidfd = -1  # no pidfd support: poll below
        if pidfd >= 0:
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()

            def exited() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(pidfd, exited)
            try:
                await ready
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            poll = min(poll, 0.005)
    while proc.returncode is None:
        await asyncio.sleep(poll)
    return proc.returncode


async def terminate(proc: asyncio.subprocess.Process, tracker: ProcessTracker) -> None:
    """Kill the process and its group, reap it, and forget it."""
    kill_group(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), timeout=5)
    tracker.discard(proc.pid)


class _GroupRegistry(Protocol):
    def add(self, pgid: int) -> None: ...

    def discard(self, pgid: int) -> None: ...


class SharedProcesses:
    """A `ProcessTracker` for processes that serve many units (the MCP servers an executor's units share).

    They carry no unit token and join no unit cgroup, so a unit's end, timeout or cancel leaves them
    running; they are registered with `registry` (the executor's reaper, whose watchdog kills them if
    the executor dies, even by `kill -9`) and killed by `kill_all()` when their owner closes.
    """

    def __init__(self, registry: _GroupRegistry | None = None) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self.groups: set[int] = set()

    def add(self, pgid: int) -> None:
        with self._lock:
            self.groups.add(pgid)
        if self._registry is not None:
            self._registry.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self.groups.discard(pgid)
        if self._registry is not None:
            self._registry.discard(pgid)

    def child_env(self) -> dict[str, str]:
        return {}

    def cgroup_procs(self) -> str | None:
        return None

    def kill_all(self) -> None:
        with self._lock:
            groups = list(self.groups)
        for pgid in groups:
            kill_group(pgid)
            self.discard(pgid)
