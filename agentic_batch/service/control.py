"""Starting, stopping and recovering executors: the job state machine's side effects.

Every transition is a guarded update (expected current status), so a user's cancel racing the
executor's completion ends in one consistent state.
"""

from __future__ import annotations

import signal
import time

from agentic_batch.config import Settings
from agentic_batch.engine.hostlock import holder_pid
from agentic_batch.engine.launch import launch_executor
from agentic_batch.engine.procs import hostname, signal_process
from agentic_batch.service.views import executor_alive
from agentic_batch.store import JobRecord, Store


def reclaim_dead_executors(store: Store, settings: Settings, job_id: int) -> int:
    """Mark executors of the job that died as dead and put their units back to PENDING at once.

    On this host, a dead pid is certain, so no need to wait for lease expiry. Elsewhere only a
    heartbeat older than a lease counts as dead. Returns the number of units released.
    """
    released = 0
    now = time.time()
    for record in store.list_executors(job_id, live_only=True):
        if executor_alive(record, settings, now):
            continue
        store.set_executor_state(record.id, "dead")
        count = store.release_units(record.id)
        released += count
        store.append_logs([{"job_id": job_id, "level": "warning", "executor_id": record.id,
                            "message": f"executor {record.id} (pid {record.pid} on {record.host}) is gone; "
                                       f"{count} of its unit(s) returned to PENDING"}])
    return released


def live_local_pid(settings: Settings, job_id: int) -> int | None:
    pid = holder_pid(settings.run_dir, job_id)
    return pid if pid and pid > 0 else None


def spawn(store: Store, settings: Settings, job: JobRecord) -> tuple[int, bool]:
    """Make sure an executor works on this RUNNING job on this host; (pid, newly started)."""
    reclaim_dead_executors(store, settings, job.id)
    return launch_executor(settings, job.id, job.workdir)


def signal_executors(store: Store, settings: Settings, job_id: int, sig: int = signal.SIGTERM) -> int:
    """Signal every live executor of the job on this host (others see the job's control column)."""
    sent = 0
    pid = live_local_pid(settings, job_id)
    if pid:
        sent += signal_process(pid, sig)
    for record in store.list_executors(job_id, live_only=True):
        if record.host == hostname() and record.pid != pid and executor_alive(record, settings):
            sent += signal_process(record.pid, sig)
    return sent


def any_live_executor(store: Store, settings: Settings, job_id: int) -> bool:
    if live_local_pid(settings, job_id):
        return True
    return any(executor_alive(r, settings) for r in store.list_executors(job_id, live_only=True))
