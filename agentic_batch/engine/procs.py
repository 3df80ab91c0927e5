"""Is that pid still our process? Answers that survive zombies and recycled pids (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import socket


def hostname() -> str:
    return os.environ.get("ABP_HOSTNAME") or socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2:].split()


def pid_start_token(pid: int) -> str | None:
    """The process start time in clock ticks since boot; with the pid it names one process."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_alive(pid: int | None, start_token: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, when given, started at `start_token`."""
    if not pid or pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return False  # Linux without that pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_token is None or fields[19] == start_token


def signal_process(pid: int, sig: int) -> bool:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
        return True
    return False


# -- whole process trees -------------------------------------------------------------------------

#: The variable every process started for a unit carries (`<executor token>.<n>`), so a process that
#: left its session and its parent behind can still be traced to its unit through /proc/PID/environ.
UNIT_TOKEN_ENV = "ABP_UNIT_TOKEN"
_PR_SET_CHILD_SUBREAPER = 36


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process in /proc (empty where there is no /proc)."""
    table: dict[int, tuple[int, int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields and len(fields) > 2:
                table[int(name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def session_of(pid: int) -> int | None:
    """The session id of a process (readable for zombies too)."""
    fields = _stat_fields(pid)
    return int(fields[3]) if fields and len(fields) > 3 else None


def unit_token_of(pid: int) -> str | None:
    """The unit token in a process's environment (None if absent, unreadable, or a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    prefix = UNIT_TOKEN_ENV.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def descendants(table: dict[int, tuple[int, int, str]], roots: set[int]) -> set[int]:
    """`roots` and every process below them (by parent pid) that is in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, ()))
    return seen


def freeze_and_kill(pids: set[int]) -> None:
    """SIGSTOP every pid and its group first (no new forks while we look), then SIGKILL them all.

    Never signals our own process group, pid 1 or ourselves.
    """
    import signal

    own = {os.getpid(), 1}
    own_group = os.getpgrp()
    groups = set()
    for pid in pids - own:
        signal_process(pid, signal.SIGSTOP)
        fields = _stat_fields(pid)
        if fields and len(fields) > 2 and int(fields[2]) not in (own_group, 0, 1):
            groups.add(int(fields[2]))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in pids - own:
        signal_process(pid, signal.SIGKILL)


def set_child_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process instead of init (Linux
    PR_SET_CHILD_SUBREAPER), so a process that double-forks out of its session is still below us."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
