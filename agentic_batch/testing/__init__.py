"""Test and benchmark fixtures that ship with the package.

They live in the package (not under tests/) so the engine's end-to-end tests, the benchmarks and
users debugging an offline setup can all drive the real Claude Code CLI against a scripted model
server on 127.0.0.1 without the internet.
"""

from __future__ import annotations

import threading


class SetTracker:
    """A `ProcessTracker` that just remembers the process groups it was given.

    Tests use it to see which groups a worker started and to kill leftovers; `seen` keeps every
    group ever added, so a test can check that a group a worker discarded is really gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: set[int] = set()
        self.seen: list[int] = []

    def add(self, pgid: int) -> None:
        with self._lock:
            self.active.add(pgid)
            self.seen.append(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self.active.discard(pgid)

    def child_env(self) -> dict[str, str]:
        return {}

    def cgroup_procs(self) -> str | None:
        return None
