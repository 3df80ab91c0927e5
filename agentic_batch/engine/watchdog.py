"""The executor's watchdog: kills every agent process when the executor dies, however it dies.

Run as `python -I watchdog.py` (standard library only, started by `Reaper.start`). It ignores
terminal signals and reads lines on stdin from the executor:

    T <token>      the executor's unit-token prefix (every agent carries ABP_UNIT_TOKEN=<token>.<n>)
    C <path>       the executor's cgroup directory (it moved us into it)
    +<pgid> / -<pgid>      an agent process group started / ended
    P <pid> <start>        a process that re-parented to the executor (an orphan it adopted)

At EOF (the executor exited or was killed: the kernel closes the pipe) it SIGKILLs, in this order:
every process in the executor's cgroup except itself (`cgroup.kill` on each unit's cgroup); every
known group; every process whose environment carries the token (processes that left their session
and parent); every adopted orphan still the same process (start time checked). Then it leaves the
cgroup and removes it.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            raw = handle.read()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _kill(pid: int) -> None:
    if pid > 1 and pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _with_token(prefix: bytes) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        if any(entry.startswith(prefix) for entry in raw.split(b"\0")):
            found.add(int(name))
    return found


def _kill_cgroups(base: str) -> None:
    for _ in range(100):
        busy = False
        for entry in sorted(os.scandir(base), key=lambda e: e.name) if os.path.isdir(base) else ():
            if not entry.is_dir():
                continue
            try:
                with open(os.path.join(entry.path, "cgroup.kill"), "w") as handle:
                    handle.write("1")
            except OSError:
                for line in open(os.path.join(entry.path, "cgroup.procs")).read().split():  # noqa: SIM115
                    _kill(int(line))
            for below, _, _ in sorted(os.walk(entry.path), key=lambda e: -len(e[0])):  # deepest first
                try:
                    os.rmdir(below)
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
        if not busy:
            return
        time.sleep(0.02)


def _leave_cgroup(base: str) -> None:
    """Move ourselves to the parent cgroup and remove the executor's."""
    try:
        with open(os.path.join(os.path.dirname(base), "cgroup.procs"), "w") as handle:
            handle.write("0")
        os.rmdir(base)
    except OSError:
        pass


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    token, base = b"", ""
    groups: set[int] = set()
    adopted: dict[int, str] = {}
    for line in sys.stdin:
        line = line.strip()
        if line[:1] == "+":
            groups.add(int(line[1:]))
        elif line[:1] == "-":
            groups.discard(int(line[1:]))
        elif line[:2] == "T ":
            token = f"ABP_UNIT_TOKEN={line[2:]}.".encode()
        elif line[:2] == "C ":
            base = line[2:]
        elif line[:2] == "P ":
            pid, start = line[2:].split()
            adopted[int(pid)] = start
    if base:
        _kill_cgroups(base)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    if token and os.path.isdir("/proc"):
        for _ in range(3):  # a process forking right now: look again until nothing carries the token
            found = _with_token(token)
            if not found:
                break
            for pid in found:
                _kill(pid)
            time.sleep(0.05)
    for pid, start in adopted.items():
        fields = _stat(pid)
        if fields and len(fields) > 19 and fields[19] == start:
            _kill(pid)
    if base:
        _leave_cgroup(base)


if __name__ == "__main__":
    main()
