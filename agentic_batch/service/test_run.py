"""Test first: run the job's first unit synchronously, in this process, before any money is spent
on the rest. The unit goes through the same runner as in the executor (same prompt rendering,
timeout, process cleanup, retry decision) and its conversation is streamed to the store as it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.engine.executor import close_worker
from agentic_batch.engine.reaper import Reaper
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.errors import IllegalState
from agentic_batch.store import JobRecord, Store
from agentic_batch.workers import get_worker_kind


def run_test_unit(store: Store, settings: Settings, job: JobRecord) -> int:
    """Run the first pending unit; the job must already be TESTING. Returns the unit id."""
    unit = store.first_unit(job.id)
    if unit is None:
        raise IllegalState(f"job {job.id} has no pending unit to test")
    owner = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    claimed = store.claim_unit(owner, unit.id, settings.lease_seconds)
    if claimed is None:
        raise IllegalState(f"unit {unit.id} of job {job.id} is no longer pending")
    store.update_job(job.id, test_unit_id=unit.id)
    worker = get_worker_kind(job.worker).build(job.worker_options)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abp-test-store")

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kwargs))

    async def main() -> None:
        recorder = Recorder(store, db, owner=owner)
        reaper = Reaper()
        reaper.start()
        flusher = asyncio.create_task(recorder.run())
        try:
            recorder.log(job.id, "info", f"test run of unit {unit.id} ({unit.key})", unit_id=unit.id)
            await UnitRunner(job, worker, recorder, settings, reaper=reaper, executor_id=owner).run_unit(claimed)
        finally:
            await close_worker(worker)
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await recorder.flush()
            reaper.close()

    try:
        asyncio.run(main())
    finally:
        store.release_units(owner)  # interrupted (Ctrl-C): the unit goes back to PENDING
        pool.shutdown(wait=True)
    return unit.id
