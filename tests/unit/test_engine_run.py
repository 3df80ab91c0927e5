"""The executor's run, in-process against a SQLite temp-file store (tests/fixtures/inprocess.py):
budget stop, quota hold, drain on a signal, abort on a second one, and a stop that a resume clears
while the executor drains. Each runs in well under a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentic_batch.engine.executor import Executor
from agentic_batch.engine.run_state import Mode, StopReason
from agentic_batch.workers.base import ErrorClass, UnitContext, UnitOutcome
from tests.fixtures.inprocess import executor, run, running_job


async def ok(ctx: UnitContext) -> UnitOutcome:
    return UnitOutcome(output=f"done {ctx.key}")


def test_a_job_runs_to_completed_in_process(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=5, concurrency=2)
    ex, worker = executor(orch, job, ok)
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "COMPLETED" and status.completed == 5, status
    assert sorted(a.key for a in worker.attempts) == ["0", "1", "2", "3", "4"]  # each unit once


def test_budget_reached_stops_claiming_and_pauses_with_reason_budget(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=6, concurrency=1, budget_usd=0.25)

    async def costly(ctx: UnitContext) -> UnitOutcome:
        return UnitOutcome(output="ok", cost_usd=0.1)

    ex, worker = executor(orch, job, costly)
    assert run(ex) == 0
    status = orch.status(job)
    # 0.1 per unit: after two, a third would (by the running average) pass 0.25, so none starts
    assert status.status == "PAUSED" and status.pause_reason == "budget", status
    assert status.completed == 2 and status.pending == 4 and len(worker.attempts) == 2
    assert ex.state.reason is StopReason.BUDGET


def test_a_quota_error_holds_every_new_unit_until_the_reset_without_spending_a_retry(
        orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=3, concurrency=1, max_retries=0)
    hold = 0.3
    failed_at: list[float] = []

    async def quota_once(ctx: UnitContext) -> UnitOutcome:
        if not failed_at:
            failed_at.append(time.time())
            return UnitOutcome.failure("usage limit reached", ErrorClass.quota, retry_after=hold)
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, quota_once)
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "COMPLETED" and status.completed == 3, status  # max_retries=0: no retry spent
    later = [a for a in worker.attempts if a.started > failed_at[0]]
    assert len(later) == 3 and min(a.started for a in later) >= failed_at[0] + hold - 0.01
    # job-wide, in the store
    assert orch.store.jobs.get_job(job).hold_until == pytest.approx(failed_at[0] + hold, abs=0.05)


def test_a_signal_drains_in_flight_units_and_pauses(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=6, concurrency=2)
    holder: dict[str, Executor] = {}
    release = asyncio.Event()

    async def signal_once_two_run(ctx: UnitContext) -> UnitOutcome:
        if ctx.key == "1":  # both slots busy: SIGTERM, then let the two finish within the grace period
            holder["ex"].state.signal("SIGTERM")
            asyncio.get_running_loop().call_later(0.05, release.set)
        await release.wait()
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, signal_once_two_run)
    holder["ex"] = ex
    assert run(ex) == 0
    status = orch.status(job)
    # the two in flight finished; nothing else started
    assert status.status == "PAUSED" and status.pause_reason == "stopped", status
    assert status.completed == 2 and status.pending == 4 and len(worker.attempts) == 2
    assert ex.state.reason is StopReason.SIGNALLED and ex.state.mode is Mode.STOP


def test_a_second_signal_cancels_in_flight_units_and_returns_them(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=4, concurrency=2)
    holder: dict[str, Executor] = {}

    async def signal_twice_once_two_run(ctx: UnitContext) -> UnitOutcome:
        if ctx.key == "1":
            holder["ex"].state.signal("SIGTERM")
            asyncio.get_running_loop().call_later(0.02, holder["ex"].state.signal, "SIGINT")
        await asyncio.sleep(60)
        return UnitOutcome(output="never")

    ex, worker = executor(orch, job, signal_twice_once_two_run)
    holder["ex"] = ex
    started = time.monotonic()
    assert run(ex) == 0
    assert time.monotonic() - started < 5  # not the 10 s stop grace, let alone the agents' 60 s
    status = orch.status(job)
    assert status.status == "PAUSED" and status.pending == 4 and status.running == 0, status
    assert ex.state.mode is Mode.ABORT and len(worker.attempts) == 2
    assert all(a.ended is not None for a in worker.attempts)  # cancelled, not left running


def test_a_resume_that_clears_the_stop_while_the_executor_drains_keeps_the_job_running(
        orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    """`abp stop` then `abp resume` while a unit is still finishing: the executor must not pause the
    job the resume has just made RUNNING again; it works on in a fresh pass and completes it."""
    job = running_job(orch, workdir, n=4, concurrency=1)
    holder: dict[str, Executor] = {}

    async def stop_then_resume_during_first(ctx: UnitContext) -> UnitOutcome:
        ex = holder["ex"]
        if ctx.key == "0" and ctx.attempt == 1:
            await asyncio.to_thread(orch.stop, job)
            ex._notified(job, "stop")  # as PostgreSQL's NOTIFY would: the executor reads control now
            while ex.state.mode is Mode.RUN:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(orch.resume, job)  # finds this executor alive: starts none
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, stop_then_resume_during_first)
    holder["ex"] = ex
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "COMPLETED" and status.completed == 4, status
    assert sorted(a.key for a in worker.attempts) == ["0", "1", "2", "3"]  # nothing ran twice


def test_a_stop_request_pauses_through_the_store(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=4, concurrency=1)
    holder: dict[str, Executor] = {}

    async def stop_during_first(ctx: UnitContext) -> UnitOutcome:
        ex = holder["ex"]
        if ctx.key == "0":
            await asyncio.to_thread(orch.stop, job)
            ex._notified(job, "stop")
            while ex.state.mode is Mode.RUN:  # the stop is read while this unit still runs
                await asyncio.sleep(0.005)
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, stop_during_first)
    holder["ex"] = ex
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "PAUSED" and status.pause_reason == "stopped", status
    assert status.completed == 1 and status.pending == 3
    assert ex.state.reason is StopReason.REQUESTED and orch.store.jobs.get_job(job).control is None


def test_a_cancel_and_a_retry_landing_while_a_unit_runs_leave_the_job_to_finish(
        orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    """`abp cancel` then `abp retry --include-cancelled` while a unit is in flight: the running
    attempt's result is refused by its lease (the unit was cancelled and queued again), the job is
    RUNNING again under this executor, and every unit completes once, the interrupted one on a new
    attempt. Nothing of the cancel survives (no CANCELLED status, no `control` left set)."""
    job = running_job(orch, workdir, n=3, concurrency=1)
    holder: dict[str, Executor] = {}

    async def cancel_and_retry_during_first(ctx: UnitContext) -> UnitOutcome:
        if ctx.key == "0" and ctx.attempt == 1:
            await asyncio.to_thread(orch.cancel, job)
            await asyncio.to_thread(orch.retry, job, include_cancelled=True)  # finds this executor: starts none
            holder["ex"]._notified(job, "retry")
        return UnitOutcome(output=f"done {ctx.key}")

    ex, worker = executor(orch, job, cancel_and_retry_during_first)
    holder["ex"] = ex
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "COMPLETED" and status.completed == 3, status
    assert [a.attempt for a in worker.of("0")] == [1, 2] and len(worker.of("1")) == len(worker.of("2")) == 1
    assert orch.store.jobs.get_job(job).control is None
