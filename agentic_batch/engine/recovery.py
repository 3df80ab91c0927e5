"""Finding executors that died and giving their units back.

On this host a dead pid is certain (the kernel says so), so units come back at once. For an executor
on another host only a heartbeat older than a lease counts as dead; until then its leases stand (the
claim query takes expired leases back anyway).
"""

from __future__ import annotations

import time

from agentic_batch.config import Settings
from agentic_batch.engine.procs import hostname, process_alive
from agentic_batch.store import ExecutorRecord, Store


def executor_alive(record: ExecutorRecord, settings: Settings, now: float | None = None) -> bool:
    """On this host ask the kernel; elsewhere trust a heartbeat younger than a lease."""
    if record.state not in ("running", "stopping", "testing"):  # testing: a test run's owner (service.test_run)
        return False
    if record.host == hostname():
        return process_alive(record.pid, record.pid_start)
    now = time.time() if now is None else now
    return now - record.heartbeat_at < settings.lease_seconds


def reclaim_dead_executors(store: Store, settings: Settings, job_id: int, skip: str | None = None) -> int:
    """Mark the job's dead executors dead and put their units back to PENDING. Returns units released."""
    released = 0
    now = time.time()
    for record in store.executors.list_executors(job_id, live_only=True):
        if record.id == skip or executor_alive(record, settings, now):
            continue
        store.executors.set_executor_state(record.id, "dead")
        count = store.units.release_units(record.id)
        released += count
        store.logs.append_logs([{"job_id": job_id, "level": "warning", "executor_id": record.id,
                                 "message": f"executor {record.id} (pid {record.pid} on {record.host}) is gone; "
                                       f"{count} of its unit(s) returned to PENDING"}])
    return released


def live_executors(store: Store, settings: Settings, job_id: int) -> list[ExecutorRecord]:
    now = time.time()
    return [r for r in store.executors.list_executors(job_id, live_only=True) if executor_alive(r, settings, now)]
