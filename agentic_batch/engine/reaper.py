"""Making sure no agent outlives its executor, even after `kill -9`.

Agents run in their own sessions (so a timeout can kill each one's whole process group) and carry
PR_SET_PDEATHSIG, which only reaches the direct child. Grandchildren (a shell's `sleep`, a tool's
subprocess) would be orphaned. So each executor starts a tiny watchdog process that holds the read
end of a pipe and is told every agent process group as it starts and ends. When the executor dies
by any means, the kernel closes the pipe; the watchdog reads EOF and SIGKILLs every group it knows.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

from agentic_batch.workers.process import kill_group

_WATCHDOG = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """The executor's side of the watchdog: a set of live process groups, mirrored to the watchdog."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # terminal signals aimed at the executor must not reach it
            close_fds=True,
        )

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._send(f"+{pgid}")

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
            self._send(f"-{pgid}")

    def kill_all(self) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            kill_group(pgid)
            self.discard(pgid)

    def close(self) -> None:
        """Kill what is left, then let the watchdog exit (EOF with an empty set)."""
        self.kill_all()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)


class UnitProcesses:
    """The tracker one unit's worker sees: registers groups with the reaper and remembers its own,
    so whatever the agent left behind is killed when the unit ends."""

    def __init__(self, reaper: Reaper | None) -> None:
        self._reaper = reaper
        self._groups: set[int] = set()

    def add(self, pgid: int) -> None:
        self._groups.add(pgid)
        if self._reaper is not None:
            self._reaper.add(pgid)

    def discard(self, pgid: int) -> None:
        self._groups.discard(pgid)
        if self._reaper is not None:
            self._reaper.discard(pgid)

    def kill_all(self) -> None:
        for pgid in list(self._groups):
            kill_group(pgid)
            self.discard(pgid)
