"""Starting, stopping and recovering executors: the job state machine's side effects.

Every transition is a guarded update (expected current status), so a user's cancel racing the
executor's completion ends in one consistent state.
"""

from __future__ import annotations


from agentic_batch.config import Settings
from agentic_batch.engine.hostlock import holder_pid, live_slots
from agentic_batch.engine.launch import launch_executor, launch_joiners
from agentic_batch.engine.recovery import executor_alive, reclaim_dead_executors
from agentic_batch.store import JobRecord, Store

__all__ = ["reclaim_dead_executors"]


def live_local_pid(settings: Settings, job_id: int) -> int | None:
    pid = holder_pid(settings.run_dir, job_id)
    return pid if pid and pid > 0 else None


def spawn(store: Store, settings: Settings, job: JobRecord) -> tuple[int, bool]:
    """Make sure an executor works on this RUNNING job on this host; (pid, newly started)."""
    reclaim_dead_executors(store, settings, job.id)
    return launch_executor(settings, job.id, job.workdir)


def join(settings: Settings, job: JobRecord, count: int = 1) -> list[int]:
    """`count` more executors for the job on this host (further slots), started together; their pids."""
    return launch_joiners(settings, job.id, count, job.workdir)


def any_live_executor(store: Store, settings: Settings, job_id: int) -> bool:
    if live_slots(settings.run_dir, job_id):
        return True
    return any(executor_alive(r, settings) for r in store.executors.list_executors(job_id, live_only=True))
