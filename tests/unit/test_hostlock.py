"""The executor's slot lock against someone looking at it: real flocks on real files.

`holder_of` (the launcher polling for its executor, `abp status`, a resume) looks at a slot by taking a
shared lock for an instant. An executor starting in that instant once took the slot for taken and
left (exit 0, which the launcher trusted): a RUNNING job with nobody working it after kill -9 and resume
on a loaded host. Here the look is held for as long as the test likes, so the race is certain.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentic_batch.engine.hostlock import HostLock, holder_of, lock_path


@contextmanager
def looking(path: Path) -> Iterator[int]:
    """A prober frozen in the middle of `holder_of` (its shared lock held)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        yield fd
    finally:
        os.close(fd)


def test_a_slot_someone_is_looking_at_is_taken_once_the_look_ends(tmp_path: Path) -> None:
    path = lock_path(tmp_path, 7)
    with looking(path) as fd:
        threading.Timer(0.3, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        lock = HostLock(tmp_path, 7)
        assert lock.acquire(wait=30)
    lock.publish()
    assert holder_of(path) == os.getpid()
    lock.release()


def test_a_dead_executors_pid_in_the_slot_is_not_an_executor(tmp_path: Path) -> None:
    path = lock_path(tmp_path, 7)
    path.write_text(str(2**22 + 1))  # above any pid_max: no process has it
    with looking(path) as fd:
        threading.Timer(0.3, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        lock = HostLock(tmp_path, 7)
        assert lock.acquire(wait=30)
    lock.release()


def test_a_live_executor_in_the_slot_is_the_answer_at_once(tmp_path: Path) -> None:
    first = HostLock(tmp_path, 7)
    assert first.acquire()
    first.publish()  # our own pid: alive
    second = HostLock(tmp_path, 7)
    assert not second.acquire(wait=3600)  # would hang the test for an hour if it waited
    first.release()
    assert second.acquire()
    second.release()


def test_without_wait_a_busy_slot_is_refused(tmp_path: Path) -> None:
    """Joined executors skip a busy slot for the next one (a look there costs nothing)."""
    with looking(lock_path(tmp_path, 7)):
        assert not HostLock(tmp_path, 7).acquire()
