"""Batching writes to the store: conversation events, unit results and log lines.

Workers emit events synchronously from the event loop; a single flusher coroutine drains everything
that accumulated while the previous write ran, in one transaction. Under load batches grow on their
own; when idle each event is written within one flush (about 100 ms), so conversations appear live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentic_batch.engine.outage import StoreUnavailable
from agentic_batch.store import NewEvent, Store, UnitResult

_MAX_EVENT_TEXT = 100_000
log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]


def _clip(data: Any, depth: int = 0) -> Any:
    """Keep a runaway tool output from bloating the store: long strings, at any depth (a tool call's
    input, a list of content blocks), are cut with a note."""
    if isinstance(data, str):
        if len(data) > _MAX_EVENT_TEXT:
            return data[:_MAX_EVENT_TEXT] + f"\n… [{len(data) - _MAX_EVENT_TEXT} more characters cut]"
        return data
    if depth > 20:
        return data
    if isinstance(data, dict):
        return {key: _clip(value, depth + 1) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_clip(value, depth + 1) for value in data]
    return data


class Recorder:
    """Buffers events, results and logs; `flush()` writes them; `run()` flushes continuously."""

    def __init__(self, store: Store, db: DbCall, owner: str, interval: float = 0.1, job_id: int | None = None) -> None:
        self._store = store
        self._job_id = job_id
        self._db = db
        self._owner = owner
        self._interval = interval
        self._events: list[NewEvent] = []
        self._results: list[UnitResult] = []
        self._logs: list[dict[str, Any]] = []
        self._seq: dict[tuple[int, int | None, int], int] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        #: A batch write under way and how much of each buffer it holds. It runs to its end even when
        #: the flush that started it is cancelled (its thread cannot be stopped), so the next flush first
        #: waits for it and drops what it wrote: nothing is written twice.
        self._write: asyncio.Future[Any] | None = None
        self._writing: tuple[int, int, int, list[UnitResult]] = (0, 0, 0, [])
        self.lost: list[int] = []  # results rejected because the lease was gone

    def emitter(self, job_id: int, unit_id: int | None, attempt: int) -> Callable[[str, dict[str, Any]], None]:
        key = (job_id, unit_id, attempt)

        def emit(kind: str, data: dict[str, Any] | None = None) -> None:
            seq = self._seq.get(key, 0)
            self._seq[key] = seq + 1
            self._events.append(NewEvent(job_id=job_id, unit_id=unit_id, attempt=attempt, seq=seq,
                                         ts=time.time(), kind=kind, data=_clip(dict(data or {}))))
            self._wake.set()

        return emit

    def forget(self, job_id: int, unit_id: int | None, attempt: int) -> None:
        self._seq.pop((job_id, unit_id, attempt), None)

    def result(self, result: UnitResult) -> None:
        self._results.append(result)
        self._wake.set()

    def log(self, job_id: int, level: str, message: str, **extra: Any) -> None:
        row: dict[str, Any] = {"job_id": job_id, "level": level, "message": message, "ts": time.time()}
        for name in ("unit_id", "executor_id"):
            if name in extra:
                row[name] = extra.pop(name)
        row["extra"] = extra or None
        self._logs.append(row)
        self._wake.set()

    @property
    def pending_results(self) -> int:
        """Results not yet in the store (buffered or being written): their units are still RUNNING
        there, so the pool keeps their slots until they are written."""
        return len(self._results)

    def describe_pending(self) -> str:
        return (f"{len(self._results)} result(s), {len(self._events)} event(s) and {len(self._logs)} log "
                "line(s)")

    async def flush(self, then: Callable[[], Any] | None = None) -> Any:
        """Write everything buffered, in one transaction; events first, so a result never lands before
        its conversation. `then` (a store call: the pool's claim) runs in that same transaction, and
        what it returns is returned.

        A buffer is emptied only after its write succeeded (what was appended meanwhile stays), so a
        failed write (the store is down: the executor's `db` gave up) loses nothing and a later flush
        writes it, still events before results.
        """
        async with self._lock:
            if self._write is not None:  # a write whose flush was cancelled: let it land, account for it
                await asyncio.wait({self._write})
                self._settle(raise_error=False)
            events, results, logs = list(self._events), list(self._results), list(self._logs)
            if not (events or results or logs):
                return await self._db(then) if then is not None else None
            # listeners (dashboards, PostgreSQL) hear of it when the write commits: no round trip of its own
            self._write = asyncio.ensure_future(
                self._db(self._store.write_batch, self._owner, events, results, logs, then, self._job_id))
            self._writing = (len(events), len(results), len(logs), results)
            await asyncio.wait({self._write})  # a cancellation here leaves the write running (see _write)
            return self._settle(raise_error=True)

    def _settle(self, raise_error: bool) -> Any:
        """The finished write: drop what it wrote from the buffers; a failed one leaves them whole."""
        write, self._write = self._write, None
        assert write is not None and write.done()
        if write.cancelled() or write.exception() is not None:
            if raise_error:
                return write.result()  # raises
            return None
        n_events, n_results, n_logs, results = self._writing
        del self._events[:n_events]
        del self._results[:n_results]
        del self._logs[:n_logs]
        applied, answer = write.result()
        self._refused([r for r in results if r.unit_id not in set(applied)])
        return answer

    def _refused(self, results: list[UnitResult]) -> None:
        """The fence refused these results: the unit is no longer leased to us for that attempt (its
        lease expired during a store outage and it was taken back, or a user reset/cancelled it).
        The unit's current owner decides its outcome; say so in the job's log."""
        for r in results:
            self.lost.append(r.unit_id)
            log.warning("result of unit %s (attempt %s) not recorded: its lease is no longer ours", r.unit_id,
                        r.attempt)
            if self._job_id is not None:
                self.log(self._job_id, "warning", f"result of attempt {r.attempt} not recorded: the unit's lease "
                         "was no longer this executor's (expired or taken over); the unit's current attempt "
                         "decides it", unit_id=r.unit_id, executor_id=self._owner)

    async def run(self) -> None:
        """Flush continuously until cancelled (the final flush is the caller's)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except StoreUnavailable:
                return  # the executor is giving up; its final flush says what could not be written
            except Exception as exc:  # the buffers are kept; a later flush (or the final one) writes them
                log.warning("writing buffered events/results failed, will retry: %s", exc)
                self._wake.set()
                await asyncio.sleep(1.0)
            await asyncio.sleep(self._interval)
