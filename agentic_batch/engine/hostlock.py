"""Which executors run a job on this host, enforced by the kernel.

Every executor holds an exclusive flock on a slot file for its whole life: slot 1
(`run/job-<id>.lock`) is the job's primary executor, the one `start`/`resume` make sure exists, so
however many resumes race there is one; slots 2.. (`run/job-<id>.<n>.lock`) are executors added with
`--join` / `--executors N`. A lock dies with its process, however it dies, so a stale file can never
block a resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from agentic_batch.engine.procs import process_alive

MAX_SLOTS = 64
_SLOT_FILE = re.compile(r"^job-(\d+)(?:\.(\d+))?\.lock$")
log = logging.getLogger(__name__)
#: How often a waiting `acquire` tries a busy slot again.
_RETRY_SECONDS = 0.05


def lock_path(run_dir: Path, job_id: int, slot: int = 1) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / (f"job-{job_id}.lock" if slot == 1 else f"job-{job_id}.{slot}.lock")


class HostLock:
    """An executor's slot lock. `acquire()` never blocks on a live executor: False means it holds the slot."""

    def __init__(self, run_dir: Path, job_id: int, slot: int = 1) -> None:
        self.run_dir = run_dir
        self.job_id = job_id
        self.slot = slot
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return lock_path(self.run_dir, self.job_id, self.slot)

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the slot. The pid is written later by `publish()`, once the executor is registered in
        the store, so whoever waits for the pid (the launcher) then also finds the store record.

        With `wait`, a busy slot is not yet an answer while its file names no live process: `holder_of`
        (the launcher polling for its executor, `abp status`, a resume) looks by taking a shared lock
        for an instant, and an executor starting in that instant would otherwise take the slot for
        taken and leave, while the launcher, seeing it exit 0, trusted it: a RUNNING job with nobody
        working it (seen after kill -9 and resume on a loaded host). An empty file (a prober, or an
        executor not yet published) or a dead pid (the killed executor's) is tried again for up to
        `wait` seconds; a live pid is an executor, and the answer at once."""
        deadline = time.monotonic() + wait
        said = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raw = os.pread(fd, 32, 0).decode(errors="ignore").strip()
                os.close(fd)
                named = int(raw) if raw.isdigit() else None
                if time.monotonic() >= deadline or (named is not None and process_alive(named)):
                    return False
                if not said:
                    said = True
                    why = f"pid {named} is gone" if named else "empty: a look, or an executor not yet registered"
                    log.info("slot %s is busy but names no live executor (%s); trying again for up to %gs",
                             self.path.name, why, wait)
                time.sleep(_RETRY_SECONDS)
                continue
            os.ftruncate(fd, 0)
            self._fd = fd
            return True

    def publish(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def acquire_free_slot(self, first: int = 2) -> bool:
        """Take the lowest free slot from `first` on (a joining executor)."""
        for slot in range(first, MAX_SLOTS + 1):
            self.slot = slot
            if self.acquire():
                return True
        return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def holder_of(path: Path) -> int | None:
    """The pid holding the lock file `path`, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
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


def holder_pid(run_dir: Path, job_id: int, slot: int = 1) -> int | None:
    """The pid of the live executor in `slot` of the job on this host, or None."""
    return holder_of(lock_path(run_dir, job_id, slot))


def live_slots(run_dir: Path, job_id: int | None = None) -> dict[tuple[int, int], int]:
    """{(job id, slot): pid} for every held slot on this host (of one job, or of all jobs)."""
    found: dict[tuple[int, int], int] = {}
    if not run_dir.is_dir():
        return found
    for path in run_dir.iterdir():
        match = _SLOT_FILE.match(path.name)
        if not match or (job_id is not None and int(match.group(1)) != job_id):
            continue
        pid = holder_of(path)
        if pid is not None:
            found[(int(match.group(1)), int(match.group(2) or 1))] = pid
    return found


@contextlib.contextmanager
def spawn_guard(run_dir: Path, job_id: int) -> Iterator[None]:
    """Serialise `start`/`resume` calls for a job on this host, so two callers spawn one executor."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / f"job-{job_id}.spawn", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
