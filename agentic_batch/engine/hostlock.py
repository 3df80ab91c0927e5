"""One live executor per job per host, enforced by the kernel: the executor holds an exclusive
flock on `run/job-<id>.lock` for its whole life. The lock dies with the process, however it dies,
so a stale pid file can never block a resume."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def lock_path(run_dir: Path, job_id: int, suffix: str = "lock") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / f"job-{job_id}.{suffix}"


class HostLock:
    """The executor's lock. `acquire()` is non-blocking: False means another executor holds it."""

    def __init__(self, run_dir: Path, job_id: int) -> None:
        self.path = lock_path(run_dir, job_id)
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def holder_pid(run_dir: Path, job_id: int) -> int | None:
    """The pid of the live executor holding the job's lock on this host, or None."""
    path = lock_path(run_dir, job_id)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0).decode(errors="ignore").strip()
            return int(raw) if raw.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def spawn_guard(run_dir: Path, job_id: int) -> Iterator[None]:
    """Serialise `start`/`resume` calls for a job on this host, so two callers spawn one executor."""
    fd = os.open(lock_path(run_dir, job_id, "spawn.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
