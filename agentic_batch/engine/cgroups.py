"""A cgroup v2 per unit, where the host lets us create them: the one container a process cannot
leave by `setsid()`, double-forking or clearing its environment.

Layout: `<our cgroup>/abp-<token>/` for the executor (its watchdog lives there, which also proves
that we may move processes), one `u<n>/` below it per unit attempt that starts a process. A child
joins its unit's cgroup between fork and exec (writing "0" to `cgroup.procs`), so nothing it starts
is ever outside. Killing a unit writes `cgroup.kill` (Linux 5.14+), or freezes the cgroup and
SIGKILLs its members on older kernels.

Availability: a cgroup2 mount (pure v2 at /sys/fs/cgroup, or the hybrid `unified` mount) and write
access to our own cgroup (root, or a systemd-delegated scope). Elsewhere `available()` is False and
the reaper falls back to a subreaper and unit tokens (see reaper.py). `ABP_PROCESS_CGROUPS=0`
forces the fallback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from agentic_batch.config import env_flag


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def own_cgroup() -> Path | None:
    """The directory of the cgroup v2 this process is in, or None (no cgroup2, not Linux)."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("0::"):
                    path = mount / line[3:].strip().lstrip("/")
                    return path if path.is_dir() else None
    except OSError:
        return None
    return None


def enabled() -> bool:
    return env_flag("ABP_PROCESS_CGROUPS", default=True)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def members(cgroup: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill(cgroup: Path) -> None:
    """SIGKILL every process in `cgroup` (and below): `cgroup.kill`, else freeze, kill, thaw."""
    try:
        _write(cgroup / "cgroup.kill", "1")
        return
    except FileNotFoundError:
        pass  # kernel before 5.14
    except OSError:
        return  # the cgroup is gone
    with contextlib.suppress(OSError):
        _write(cgroup / "cgroup.freeze", "1")
    for _ in range(50):
        pids = members(cgroup)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        _write(cgroup / "cgroup.freeze", "0")


def remove(cgroup: Path) -> bool:
    """rmdir the cgroup, and first any below it (an agent that ran abp itself made some); False while
    killed members are still exiting (try again later)."""
    for below, _, _ in sorted(os.walk(cgroup), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(below)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


class CgroupTree:
    """The executor's cgroup (`abp-<token>`) and its per-unit children."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._count = 0
        self._leftover: list[Path] = []

    @classmethod
    def create(cls, token: str, first_member: int) -> CgroupTree | None:
        """Make our cgroup and move `first_member` (the watchdog) into it; None if the host refuses."""
        if not enabled():
            return None
        parent = own_cgroup()
        if parent is None:
            return None
        base = parent / f"abp-{token}"
        try:
            base.mkdir()
        except OSError:
            return None
        try:
            _write(base / "cgroup.procs", str(first_member))
        except OSError:
            remove(base)
            return None
        return cls(base)

    def unit(self) -> Path | None:
        """A new, empty cgroup for one unit attempt (None if it cannot be made)."""
        self._count += 1
        path = self.base / f"u{self._count}"
        try:
            path.mkdir()
        except OSError:
            return None
        return path

    def release(self, cgroup: Path) -> None:
        """Kill what is left in a unit's cgroup and remove it (later, if its members are still dying)."""
        kill(cgroup)
        if not remove(cgroup):
            self._leftover.append(cgroup)
        self._leftover = [path for path in self._leftover if not remove(path)]
