"""The run's rules as data: which request wins (`RunState`) and what the job becomes when a run ends
(`decide_ending`, a pure function of the stop reason, the unit counts and the live executors)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from agentic_batch.engine.finish import Decision, Ending, decide_ending
from agentic_batch.engine.run_state import Mode, RunState, StopReason
from agentic_batch.states import UnitStatus
from agentic_batch.store import JobRecord

JOB = JobRecord(id=1, name="j", status="RUNNING", source={}, prompt_template=None, intent=None, worker="python",
                worker_options={}, concurrency=1, max_retries=2, timeout_s=60, priority=0, budget_usd=None, rpm=None,
                tpm=None, reduce_prompt=None, reduce_status=None, reduce_output=None, reduce_error=None, workdir=".",
                created_at=0.0, started_at=None, finished_at=None, error=None, pause_reason=None, control=None,
                hold_until=None, test_unit_id=None)


def counts(**by_status: int) -> dict[str, int]:
    return {status: by_status.get(status.lower(), 0) for status in UnitStatus}


def test_a_more_severe_mode_and_a_stronger_reason_win() -> None:
    state = RunState()
    state.request(Mode.STOP, StopReason.BUDGET, "budget reached")
    state.request(Mode.STOP, StopReason.REQUESTED, "stop requested")
    assert (state.mode, state.reason) == (Mode.STOP, StopReason.BUDGET)  # a stop after the budget: still "budget"
    state.signal("SIGTERM")
    assert (state.mode, state.reason, state.signals) == (Mode.STOP, StopReason.SIGNALLED, 1)
    state.signal("SIGINT")
    assert state.mode is Mode.ABORT
    state.request(Mode.STOP, StopReason.REQUESTED, "stop requested")
    assert state.mode is Mode.ABORT  # never milder
    state.request(Mode.CANCEL, StopReason.CANCELLED, "job cancelled")
    assert (state.mode, state.reason) == (Mode.CANCEL, StopReason.CANCELLED)
    assert state.wake.is_set()
    state.reset()
    assert (state.mode, state.reason, state.signals) == (Mode.RUN, None, 0)


def test_a_quota_hold_only_grows() -> None:
    state = RunState()
    now = time.time()
    assert not state.held(now)
    assert state.hold(now + 10) == now + 10 and state.held(now)
    assert state.hold(now + 5) == now + 10  # a shorter hold from a later error does not cut it
    assert not state.held(now + 11)


@pytest.mark.parametrize(("reason", "pause_reason", "expect_control"), [
    (StopReason.REQUESTED, "stopped", "stop"),  # pauses only while the request stands
    (StopReason.SIGNALLED, "stopped", None),
    (StopReason.BUDGET, "budget", None),
])
def test_the_last_executor_to_stop_pauses_the_job(reason: StopReason, pause_reason: str,
                                                  expect_control: str | None) -> None:
    decision = decide_ending(reason, current=replace(JOB, control="stop"), others=0)
    assert decision == Decision(Ending.PAUSE, pause_reason=pause_reason, expect_control=expect_control)


def test_a_stopping_executor_leaves_the_job_to_the_others() -> None:
    assert decide_ending(StopReason.SIGNALLED, current=JOB, others=2).ending is Ending.LEAVE


def test_a_stop_request_cleared_by_a_resume_keeps_the_job_running() -> None:
    assert decide_ending(StopReason.REQUESTED, current=JOB, others=0).ending is Ending.KEEP_RUNNING
    # a signal is not undone by a resume: that executor was asked to go
    assert decide_ending(StopReason.SIGNALLED, current=JOB, others=0).ending is Ending.PAUSE


def test_a_cancelled_run_only_clears_the_request() -> None:
    assert decide_ending(StopReason.CANCELLED, current=JOB, others=3).ending is Ending.CLEAR_CANCEL


@pytest.mark.parametrize(("by_status", "reduce", "ending"), [
    (counts(completed=3), False, Ending.COMPLETE),
    (counts(completed=3), True, Ending.REDUCE),
    (counts(completed=2, pending=1), False, Ending.KEEP_RUNNING),  # a retry landed as the pool ended
    (counts(completed=2, running=1), True, Ending.KEEP_RUNNING),
    (counts(completed=2, failed=1, cancelled=1), True, Ending.FAIL),
    (counts(completed=2, cancelled=1), True, Ending.CANCEL),
])
def test_a_finished_run_ends_the_job_by_its_unit_counts(by_status: dict[str, int], reduce: bool,
                                                        ending: Ending) -> None:
    decision = decide_ending(StopReason.FINISHED, counts=by_status, failed_by_class={"permanent": 1},
                             max_retries=2, has_reduce=reduce)
    assert decision.ending is ending


def test_the_final_error_says_why_units_failed_and_what_was_cancelled() -> None:
    failed = decide_ending(StopReason.FINISHED, counts=counts(completed=1, failed=3),
                           failed_by_class={"permanent": 1, "retryable": 2}, max_retries=2)
    assert failed.error == ("3 unit(s) failed: 1 permanently (errors that are not retried), 2 after 3 attempt(s), "
                            "retries spent")
    cancelled = decide_ending(StopReason.FINISHED, counts=counts(completed=1, cancelled=2))
    assert cancelled.error == "2 unit(s) cancelled, 1 completed (a retry that includes cancelled units runs them)"
