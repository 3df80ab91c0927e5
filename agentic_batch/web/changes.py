"""Waking live streams when the store changes, instead of polling on a timer.

On PostgreSQL every executor NOTIFYs after each batch of writes (and the service after each state
change); one LISTEN connection per server wakes the streams watching that job. An idle dashboard then
costs nothing between changes. On SQLite (one host, cheap reads) streams keep polling each interval.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentic_batch.aio import wait_event

#: Least time between two polls of one stream, however many notifications arrive.
MIN_GAP_S = 0.5
#: Longest wait without a notification before polling anyway (covers a lost notification).
IDLE_POLL_S = 5.0


class ChangeHub:
    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[int | None, set[asyncio.Event]] = {}
        self._listener = store.changes.listen(self._notified)

    @property
    def live(self) -> bool:
        return self._listener is not None

    def _notified(self, job_id: int, _what: str) -> None:  # the LISTEN thread
        self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: int) -> None:
        for key in (job_id, None):  # a job's watchers, and the job list's
            for event in self._waiters.get(key, ()):
                event.set()

    async def wait(self, job_id: int | None, fallback: float, idle: float = IDLE_POLL_S) -> None:
        """Sleep until the job (any job for None) changes (at most `idle` seconds), or `fallback`
        seconds when there is no listener (SQLite)."""
        if not self.live:
            await asyncio.sleep(fallback)
            return
        await asyncio.sleep(MIN_GAP_S)
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            await wait_event(event, min(idle, IDLE_POLL_S) - MIN_GAP_S)
        finally:
            self._waiters[job_id].discard(event)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()


def hub_for(app_state: Any) -> ChangeHub:
    """The app's hub, made on first use (it needs the running loop)."""
    hub = getattr(app_state, "change_hub", None)
    if hub is None:
        hub = ChangeHub(app_state.orch.store, asyncio.get_running_loop())
        app_state.change_hub = hub
    return hub
