"""How an executor leaves: the job's final status, the reduce step, and what a stop means when
other executors still work on the job.

`decide_ending` is the rule (a pure function of why the pool stopped, the unit counts and the live
executors); `finish` reads those facts from the store in a race-safe order and applies it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from agentic_batch.engine.outage import StoreUnavailable, give_up_message
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.recovery import live_executors
from agentic_batch.engine.run_state import Mode, StopReason
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.store import JobRecord
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.engine.executor import Executor

log = logging.getLogger(__name__)
#: After the outage window: how long the executor keeps trying to record the pause before it exits
#: (as long as the window itself, within these bounds).
PAUSE_GRACE_SECONDS = (10.0, 30.0)
#: A final status is written only while no unit is in these: it describes every unit, and a retry
#: racing the end (units back to PENDING, job RUNNING again) must win over counts read before it.
UNFINISHED = (UnitStatus.PENDING, UnitStatus.RUNNING)
#: How often an executor waiting for the reduce step's leader looks again.
LEADER_POLL_SECONDS = 1.0


class Ending(StrEnum):
    """What an executor does to the job as it leaves (`decide_ending`)."""

    #: A resume or retry raced the end (job RUNNING again, units back to PENDING): not the end;
    #: `Executor.run` finds the job RUNNING and works on.
    KEEP_RUNNING = "keep running"
    #: Stopped while other executors still work on the job: leave it to them.
    LEAVE = "leave"
    #: Stopped and the last one out: the job -> PAUSED.
    PAUSE = "pause"
    #: Cancelled: the service already marked the job and units CANCELLED; clear the request flag.
    CLEAR_CANCEL = "clear cancel"
    #: Every unit ended, some failed: the job -> FAILED.
    FAIL = "fail"
    #: Every unit ended, none failed, some cancelled: the job -> CANCELLED.
    CANCEL = "cancel"
    #: Every unit completed and the job has a reduce step: run it (one leader), then COMPLETED.
    REDUCE = "reduce"
    #: Every unit completed: the job -> COMPLETED.
    COMPLETE = "complete"


@dataclass(frozen=True)
class Decision:
    ending: Ending
    #: The job's error (FAIL, CANCEL) or its pause reason (PAUSE).
    error: str | None = None
    pause_reason: str | None = None
    #: PAUSE only while this control request still stands (None: whatever the control column says).
    expect_control: str | None = None


def resumed_meanwhile(stopped: StopReason, current: JobRecord | None) -> bool:
    """A stop request that a `resume` cleared while the executor drained: keep the job running."""
    return (stopped.by_request and current is not None and current.status == JobStatus.RUNNING
            and current.control is None)


def decide_ending(stopped: StopReason, *, current: JobRecord | None = None, others: int = 0,
                  counts: Mapping[str, int] | None = None, failed_by_class: Mapping[str | None, int] | None = None,
                  max_retries: int = 0, has_reduce: bool = False) -> Decision:
    """The job's fate, from why the pool stopped and what the store says (no I/O: `finish` reads the
    facts and applies the decision). `current` is the job row read after the pool stopped, `others`
    the live executors besides this one, `counts` the units by status (for a run that finished)."""
    if stopped is StopReason.CANCELLED:
        return Decision(Ending.CLEAR_CANCEL)
    if stopped is not StopReason.FINISHED:
        if resumed_meanwhile(stopped, current):
            return Decision(Ending.KEEP_RUNNING)
        if others:
            return Decision(Ending.LEAVE)
        return Decision(Ending.PAUSE, pause_reason=stopped.pause_reason,
                        expect_control=Mode.STOP if stopped.by_request else None)
    counts = counts or {}
    if counts.get(UnitStatus.PENDING) or counts.get(UnitStatus.RUNNING):
        # A retry put units back while the pool was ending (e.g. cancel then retry before we saw the
        # cancel): not the end.
        return Decision(Ending.KEEP_RUNNING)
    if counts.get(UnitStatus.FAILED):
        return Decision(Ending.FAIL, error=failure_message(dict(failed_by_class or {}), max_retries))
    if cancelled := counts.get(UnitStatus.CANCELLED):
        # A job is COMPLETED only when every unit is; units a user cancelled (or left cancelled when
        # retrying some of a cancelled job) make it CANCELLED, and say how to run them.
        return Decision(Ending.CANCEL, error=f"{cancelled} unit(s) cancelled, {counts.get(UnitStatus.COMPLETED, 0)} "
                                             "completed (a retry that includes cancelled units runs them)")
    return Decision(Ending.REDUCE if has_reduce else Ending.COMPLETE)


async def finish(ex: Executor, job: JobRecord, runner: UnitRunner, recorder: Recorder,
                 stopped: StopReason) -> Decision:
    """Read the facts `decide_ending` needs, in an order that is safe against other executors and
    requests racing the end, and apply its decision. Every update is guarded by the expected status,
    so several executors finishing together agree on one outcome."""
    store = ex.store
    if stopped is StopReason.CANCELLED:
        # A retry may even have revived the job since: only the request flag is ours to clear.
        await ex.db(store.jobs.update_job, job.id, expect=[JobStatus.CANCELLED], control=None)
        recorder.log(job.id, "info", "executor stopped: job cancelled", executor_id=ex.id)
        return decide_ending(stopped)
    if stopped is not StopReason.FINISHED:
        current = await ex.db(store.jobs.get_job, job.id)
        if resumed_meanwhile(stopped, current):
            return decide_ending(stopped, current=current)
        # Mark ourselves stopped first, then look: of executors stopping together, the last one to get
        # here sees nobody left and pauses the job; a signalled executor among busy ones just leaves.
        await ex.db(store.executors.set_executor_state, ex.id, "stopped")
        others = [e for e in await ex.db(live_executors, store, ex.settings, job.id) if e.id != ex.id]
        decision = decide_ending(stopped, current=current, others=len(others))
        if decision.ending is Ending.LEAVE:
            ex.state.left_job = True
            recorder.log(job.id, "info", f"executor left; {len(others)} other executor(s) still on the job",
                         executor_id=ex.id)
            return decision
        await _pause(ex, job, recorder, decision)
        return decision
    counts = await ex.db(store.units.count_units, job.id)
    by_class = await ex.db(store.units.failed_by_class, job.id) if counts[UnitStatus.FAILED] else {}
    decision = decide_ending(stopped, counts=counts, failed_by_class=by_class, max_retries=job.max_retries,
                             has_reduce=bool(job.reduce_prompt))
    ending = decision.ending
    if ending is Ending.FAIL:
        if await ex.db(store.jobs.update_job, job.id, expect=[JobStatus.RUNNING], status=JobStatus.FAILED,
                       finished_at=time.time(), error=decision.error, no_units_in=UNFINISHED):
            recorder.log(job.id, "error", f"job failed: {decision.error}", executor_id=ex.id)
    elif ending is Ending.CANCEL:
        if await ex.db(store.jobs.update_job, job.id, expect=[JobStatus.RUNNING], status=JobStatus.CANCELLED,
                       finished_at=time.time(), error=decision.error, no_units_in=UNFINISHED):
            recorder.log(job.id, "info", f"job ended: {decision.error}", executor_id=ex.id)
    elif ending is Ending.COMPLETE or ending is Ending.REDUCE:
        if ending is Ending.REDUCE and not await _reduce_as_leader(ex, job, runner, recorder):
            return decision
        if await ex.db(store.jobs.update_job, job.id, expect=[JobStatus.RUNNING], status=JobStatus.COMPLETED,
                       finished_at=time.time(), error=None, no_units_in=UNFINISHED):
            recorder.log(job.id, "info", f"job completed: {counts[UnitStatus.COMPLETED]} unit(s)", executor_id=ex.id)
    return decision


async def _pause(ex: Executor, job: JobRecord, recorder: Recorder, decision: Decision) -> None:
    """The job -> PAUSED. A stop request pauses the job only while it stands: a `resume` clearing it
    after our look must win (guarded in the update itself)."""
    store = ex.store
    changed = await ex.db(store.jobs.update_job, job.id, expect=[JobStatus.RUNNING],
                          expect_control=decision.expect_control, status=JobStatus.PAUSED, control=None,
                          pause_reason=decision.pause_reason)
    if not changed:
        current = await ex.db(store.jobs.get_job, job.id)
        if current is not None and current.status == JobStatus.RUNNING:
            return  # resumed meanwhile: `Executor.run` finds it RUNNING and works on
        await ex.db(store.jobs.update_job, job.id, control=None)  # already paused (or cancelled)
    recorder.log(job.id, "info", "executor stopped: job paused", executor_id=ex.id)


def failure_message(by_class: dict[str | None, int], max_retries: int) -> str:
    """Why units failed, as the retry rules decided: at once (a permanent error, never retried) or
    with every retry spent. `by_class` counts FAILED units by their last error class."""
    total = sum(by_class.values())
    permanent = by_class.get("permanent", 0)
    spent = total - permanent
    after = f"after {max_retries + 1} attempt(s), retries spent" if max_retries else "on their only attempt"
    if not spent:
        return f"{total} unit(s) failed permanently (errors that are not retried)"
    if not permanent:
        return f"{total} unit(s) failed {after}"
    return f"{total} unit(s) failed: {permanent} permanently (errors that are not retried), {spent} {after}"


async def _reduce_as_leader(ex: Executor, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> bool:
    """The reduce step runs once: on the longest-running live executor. The others wait for the job to
    leave RUNNING (and take over if the leader dies). True when this executor ran it successfully."""
    from agentic_batch.engine.reduce import run_reduce

    while ex.state.running:
        current = await ex.db(ex.store.jobs.get_job, job.id)
        if current is None or current.status != JobStatus.RUNNING:
            return False
        if current.reduce_status == UnitStatus.COMPLETED:
            return True
        leaders = sorted(await ex.db(live_executors, ex.store, ex.settings, job.id),
                         key=lambda e: (e.started_at, e.id))
        if not leaders or leaders[0].id == ex.id:
            return await run_reduce(ex, job, runner, recorder)
        await asyncio.sleep(LEADER_POLL_SECONDS)
    return False


async def pause_for_store(ex: Executor, job: JobRecord, recorder: Recorder, exc: StoreUnavailable) -> None:
    """The store stayed unavailable past the window; the agents are already stopped. Record what can
    be recorded: results of units that finished, the reason, our units back to PENDING, the job PAUSED
    with reason "store" (on every executor's behalf: the others see it and stop). Tried for a short
    grace; if the store is still gone, executor.log says so and `abp resume` later reclaims the units
    of this (then dead) executor. When the pause is recorded the executor leaves the usual way, so a
    `resume` racing its exit is seen (`Executor._still_wanted`) and it carries on instead."""
    message = give_up_message(exc, job.id, ex.store.url)
    log.error("%s", message)
    recorder.log(job.id, "error", message, executor_id=ex.id)
    low, high = PAUSE_GRACE_SECONDS
    ex.outage.restart(min(high, max(low, ex.settings.store_outage_seconds)))
    try:
        await recorder.flush()
        await ex.db(ex.store.units.release_units, ex.id)
        await ex.db(ex.store.jobs.update_job, job.id, expect=[JobStatus.RUNNING], status=JobStatus.PAUSED, control=None,
                    pause_reason="store")
        await ex.db(ex.store.executors.set_executor_state, ex.id, "stopped")
    except StoreUnavailable as again:
        ex.state.left_job = True  # the store is gone: exit (a resume later reclaims this executor's units)
        ex.state.stranded = True  # and stay "running" in the store, so `abp status` shows this executor lost
        log.error("could not record the pause either (store %s: %s). The job still shows RUNNING with no "
                  "executor; once the store is back, run `abp resume %d`: it takes back this executor's "
                  "units", again.kind, again.detail, job.id)
