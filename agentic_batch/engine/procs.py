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
