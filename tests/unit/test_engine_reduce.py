"""The reduce step, in-process: one leader among the job's live executors runs it (the others wait and
take over if it dies), and it retries by the units' rules (`retry.next_step`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agentic_batch.engine import finish
from agentic_batch.engine.procs import hostname, pid_start_token
from agentic_batch.workers.base import ErrorClass, UnitContext, UnitOutcome
from tests.fixtures.inprocess import executor, run, running_job


@pytest.fixture(autouse=True)
def fast_leader_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finish, "LEADER_POLL_SECONDS", 0.01)


def _other_executor(orch, job: int) -> str:  # type: ignore[no-untyped-def]
    """A live executor of the job that started before ours (same host and pid: alive to the kernel)."""
    other = "other-executor"
    orch.store.executors.register_executor(other, job, hostname(), os.getpid(), pid_start_token(os.getpid()))
    time.sleep(0.01)  # ours registers later: the other is the leader
    return other


def _after_units_done(orch, job: int, act) -> tuple[threading.Thread, list[float]]:  # type: ignore[no-untyped-def]
    """In a thread: once every unit is COMPLETED (the executor is then at the reduce step), wait a
    little, note the time and `act()`."""
    acted: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while orch.status(job).completed < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        acted.append(time.time())
        act()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, acted


async def units_and_reduce(ctx: UnitContext) -> UnitOutcome:
    return UnitOutcome(output="reduced" if ctx.unit_id is None else f"unit {ctx.key}")


def test_the_only_executor_is_the_leader_and_runs_the_reduce_once(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=3, reduce_prompt="sum up {{ results_path }}")
    ex, worker = executor(orch, job, units_and_reduce)
    assert run(ex) == 0
    record = orch.store.jobs.get_job(job)
    assert record.status == "COMPLETED" and record.reduce_status == "COMPLETED" and record.reduce_output == "reduced"
    assert len(worker.of("reduce")) == 1


def test_a_follower_leaves_the_reduce_to_the_leader(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=3, reduce_prompt="sum up")
    _other_executor(orch, job)
    thread, _ = _after_units_done(orch, job, lambda: orch.store.jobs.update_job(
        job, reduce_status="COMPLETED", reduce_output="by the leader"))
    ex, worker = executor(orch, job, units_and_reduce)
    assert run(ex) == 0
    thread.join()
    record = orch.store.jobs.get_job(job)
    assert record.status == "COMPLETED" and record.reduce_output == "by the leader"
    assert worker.of("reduce") == []


def test_a_follower_takes_over_the_reduce_when_the_leader_dies(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=3, reduce_prompt="sum up")
    other = _other_executor(orch, job)
    thread, died = _after_units_done(orch, job, lambda: orch.store.executors.set_executor_state(other, "dead"))
    ex, worker = executor(orch, job, units_and_reduce)
    assert run(ex) == 0
    thread.join()
    record = orch.store.jobs.get_job(job)
    assert record.status == "COMPLETED" and record.reduce_output == "reduced"
    [reduce] = worker.of("reduce")
    assert reduce.started >= died[0]  # it waited for the leader while the leader lived


def test_the_reduce_retries_by_the_units_rules_and_fails_the_job_when_they_are_spent(
        orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=2, max_retries=2, reduce_prompt="sum up")

    async def reduce_keeps_failing(ctx: UnitContext) -> UnitOutcome:
        if ctx.unit_id is None:
            return UnitOutcome.failure(f"attempt {ctx.attempt}: connection reset", ErrorClass.retryable)
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, reduce_keeps_failing)
    assert run(ex) == 0
    record = orch.store.jobs.get_job(job)
    assert [a.attempt for a in worker.of("reduce")] == [1, 2, 3]  # max_retries=2: three attempts
    assert record.status == "FAILED" and record.reduce_status == "FAILED"
    assert record.error == "reduce step failed: attempt 3: connection reset"


def test_a_permanent_reduce_error_is_not_retried(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=1, max_retries=3, reduce_prompt="sum up")

    async def reduce_refused(ctx: UnitContext) -> UnitOutcome:
        if ctx.unit_id is None:
            return UnitOutcome.failure("HTTP 400: bad request", ErrorClass.permanent)
        return UnitOutcome(output="ok")

    ex, worker = executor(orch, job, reduce_refused)
    assert run(ex) == 0
    assert len(worker.of("reduce")) == 1 and orch.store.jobs.get_job(job).status == "FAILED"
