"""One lock per repository for the git operations that take the repository's own lock.

`git worktree add/remove/prune` and branch updates write `.git/worktrees`, `.git/config` and refs
under git's `*.lock` files, and git fails (rather than waits) when another process holds them. Units
run in parallel (threads of one executor, several executors, a test run), so these few operations
are serialised per repository: a threading lock inside the process and an `flock` on a file under
`$ABP_HOME/locks` across processes. The agents themselves never wait on it.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


def _thread_lock(key: str) -> threading.Lock:
    with _guard:
        return _thread_locks.setdefault(key, threading.Lock())


@contextmanager
def repo_lock(lock_dir: Path, repo: Path) -> Iterator[None]:
    """Hold the repository's lock (in this process and across processes sharing `lock_dir`)."""
    key = hashlib.sha1(str(repo.resolve()).encode()).hexdigest()[:16]
    lock_dir.mkdir(parents=True, exist_ok=True)
    with _thread_lock(key), open(lock_dir / f"git-{key}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
