"""The optional reduce step: once every unit has completed, one more agent run over all results.

The results are written as JSONL into the job's workspace and the reduce prompt is rendered with
`results_path`, `total`, `completed`, `failed` and `job_name`, so the agent can read them with its
own tools rather than receiving 100,000 outputs in its prompt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agentic_batch.aio import wait_event
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.retry import next_step
from agentic_batch.engine.runner import UnitRunner, job_workspace
from agentic_batch.results import write_export
from agentic_batch.store import JobRecord
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.engine.executor import Executor


async def run_reduce(executor: Executor, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> bool:
    """Run the reduce step; returns True when it succeeded (the caller then completes the job)."""
    store = executor.store
    results_path = job_workspace(executor.settings, job.id) / "results.jsonl"
    await executor.db(write_export, store, job.id, "jsonl", results_path)
    counts = await executor.db(store.units.count_units, job.id)
    variables = {"results_path": str(results_path), "total": sum(counts.values()),
                 "completed": counts[UnitStatus.COMPLETED], "failed": counts[UnitStatus.FAILED], "job_name": job.name}
    await executor.db(store.jobs.update_job, job.id, reduce_status=UnitStatus.RUNNING, reduce_error=None)
    recorder.log(job.id, "info", f"reduce step started over {counts[UnitStatus.COMPLETED]} result(s)",
                 executor_id=executor.id)
    error = "reduce step did not run"
    attempt, error_count = 0, 0
    while True:  # the engine's one retry loop decides (`retry.next_step`), as for every unit
        attempt += 1
        outcome, _prompt = await runner.attempt(unit_id=None, key="reduce", seq=-1, attempt=attempt,
                                                payload=variables, template=job.reduce_prompt)
        step = next_step(outcome, error_count=error_count, max_retries=job.max_retries,
                         retry_base=executor.settings.retry_base_seconds,
                         retry_cap=executor.settings.retry_max_seconds, quota_wait=job.quota_wait_s or 900.0)
        if step.status is UnitStatus.COMPLETED:
            await executor.db(store.jobs.update_job, job.id, reduce_status=UnitStatus.COMPLETED,
                              reduce_output=outcome.output)
            recorder.log(job.id, "info", "reduce step completed", executor_id=executor.id)
            return True
        error = outcome.error or "unknown error"
        if not step.retry or not executor.state.running:
            break
        error_count += step.count_error
        recorder.log(job.id, "warning", f"reduce attempt {attempt} failed: {error}", executor_id=executor.id)
        if not await _wait_until(executor, step.not_before or 0.0):
            break
    await executor.db(store.jobs.update_job, job.id, reduce_status=UnitStatus.FAILED, reduce_error=error)
    await executor.db(store.jobs.update_job, job.id, expect=[JobStatus.RUNNING], status=JobStatus.FAILED,
                      finished_at=time.time(), error=f"reduce step failed: {error}")
    recorder.log(job.id, "error", f"reduce step failed: {error}", executor_id=executor.id)
    return False


async def _wait_until(executor: Executor, when: float) -> bool:
    """Sleep until the retry's time; False if the run is asked to stop meanwhile."""
    state = executor.state
    while state.running and (left := when - time.time()) > 0:
        state.wake.clear()
        await wait_event(state.wake, left)
    return state.running
