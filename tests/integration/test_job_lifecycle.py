"""The job state machine through the service layer, with real detached executors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentic_batch.errors import IllegalState, InvalidSpec, NotFound
from agentic_batch.spec import JobSpec
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.funcs import ref


def jsonl(workdir: Path, rows: list[dict]) -> str:  # type: ignore[type-arg]
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def python_job(orch, workdir: Path, func: str, n: int = 4, **kw) -> int:  # type: ignore[no-untyped-def]
    rows = kw.pop("rows", None) or [{"id": i, "name": f"n{i}"} for i in range(n)]
    spec = JobSpec(name=kw.pop("name", "life"), source={"kind": "jsonl", "path": jsonl(workdir, rows), "key": "id",
                                                        **kw.pop("source", {})},
                   worker="python", worker_options={"function": ref(func)}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def test_test_first_then_approve_runs_the_rest_once(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "echo", prompt="hello {{ row.name }}")
    report = orch.start(job)
    assert report.status == "COMPLETED" and report.output == "0:hello n0"
    assert orch.status(job).status == "TESTING"
    assert [e.kind for e in report.events][0] == "start"
    orch.approve(job)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert final.status == "COMPLETED" and final.completed == 4
    test_unit = orch.unit(job, report.number)
    assert test_unit.attempts == 1  # approved test result kept, not run again
    steps = [(e.attempt, e.seq) for e in test_unit.events]
    assert len(steps) == len(set(steps)), steps  # the test run's last write is not repeated by its final flush


def test_reject_edit_and_test_again(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "echo", prompt="v1 {{ row.name }}")
    first = orch.start(job)
    orch.reject(job)
    assert orch.status(job).status == "CREATED"
    assert orch.unit(job, first.number).status == "PENDING"
    orch.edit_prompt(job, "v2 {{ row.name }}")
    second = orch.start(job)
    assert second.number == first.number == 1 and second.output == "0:v2 n0"


def test_edit_prompt_rejects_missing_fields_and_running_jobs(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "echo", prompt="x")
    with pytest.raises(InvalidSpec, match="nope"):
        orch.edit_prompt(job, "{{ row.nope }}")
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    with pytest.raises(IllegalState):
        orch.edit_prompt(job, "y")


def test_illegal_transitions_are_refused_without_changes(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "echo")
    with pytest.raises(IllegalState, match="CREATED"):
        orch.approve(job)
    with pytest.raises(IllegalState):
        orch.resume(job)
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    for action in (orch.approve, orch.reject, orch.stop, orch.resume, orch.cancel):
        with pytest.raises(IllegalState):
            action(job)
    assert orch.status(job).status == "COMPLETED"
    with pytest.raises(NotFound):
        orch.status(9999)


def test_retry_failed_units_after_fixing_the_cause(orch, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    monkeypatch.setenv("ABP_TEST_FLAG", str(flag))
    job = python_job(orch, workdir, "flaky", n=3, max_retries=2)
    orch.start(job, skip_test=True)
    failed = wait_status(orch, job, {"FAILED", "COMPLETED"})
    assert failed.status == "FAILED" and failed.failed == 3
    assert all(r["attempts"] == 1 for r in orch.results(job))  # permanent: no retries spent
    flag.write_text("ok")
    orch.retry(job)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "COMPLETED" and done.completed == 3
    with pytest.raises(IllegalState, match="no failed units"):
        orch.retry(job)


def test_retryable_errors_back_off_and_succeed(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "transient", n=2, max_retries=3)
    orch.start(job, skip_test=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "COMPLETED"
    rows = orch.results(job)
    assert [r["output"] for r in rows] == ["ok after 3", "ok after 3"]
    assert all(r["attempts"] == 3 for r in rows)
    assert any("will retry" in line.message for line in orch.logs(job, level="warning"))


def test_retries_exhausted_fail_the_unit(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "transient", n=1, max_retries=1)
    orch.start(job, skip_test=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "FAILED"
    [row] = orch.results(job)
    assert row["attempts"] == 2 and "ConnectionError" in row["error"]


def test_reduce_with_a_function_that_reads_the_results(orch, workdir: Path) -> None:
    rows = [{"id": i} for i in range(5)]
    spec = JobSpec(name="reduce", source={"kind": "jsonl", "path": jsonl(workdir, rows), "key": "id"},
                   worker="python", worker_options={"function": ref("count_results")},
                   reduce_prompt="summarise {{ results_path | basename }} of {{ total }}")
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "COMPLETED", done
    assert done.reduce.output == "5 of 5 completed; prompt=summarise results.jsonl of 5"
    assert "end" in [e.kind for e in orch.store.events.list_events(job_id=job, reduce=True)]


def test_unit_priorities_decide_the_order(orch, workdir: Path) -> None:
    rows = [{"id": 0, "p": "low"}, {"id": 1, "p": "normal"}, {"id": 2, "p": "critical"}, {"id": 3, "p": "high"}]
    job = python_job(orch, workdir, "echo", rows=rows, concurrency=1, source={"priority_field": "p"})
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    units = sorted((orch.unit(job, r["unit"]) for r in orch.results(job)), key=lambda u: u.started_at or 0)
    assert [u.payload["p"] for u in units] == ["critical", "high", "normal", "low"]


def test_sync_adds_only_new_items(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "echo", n=3)
    path = workdir / "items.jsonl"
    path.write_text(path.read_text() + json.dumps({"id": 3, "name": "n3"}) + "\n")
    first, again = orch.sync(job), orch.sync(job)
    assert (first.added, first.existing, first.status, first.next) == (1, 3, "CREATED", "start")
    assert (again.added, again.existing, again.next) == (0, 4, None)
    assert orch.status(job).total == 4


def test_duplicate_items_become_one_unit(orch, workdir: Path) -> None:
    rows = [{"id": 1, "name": "a"}, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    spec = JobSpec(name="dups", source={"kind": "jsonl", "path": jsonl(workdir, rows)}, worker="python",
                   worker_options={"function": ref("echo")})
    result = orch.create(spec, cwd=workdir)
    assert result.units == 2 and result.duplicates == 1


def test_budget_pauses_the_job(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "priced", n=20, concurrency=2, budget_usd=0.5)
    orch.start(job, skip_test=True)
    paused = wait_status(orch, job, {"PAUSED", "COMPLETED"})
    assert paused.status == "PAUSED" and paused.pause_reason == "budget"
    assert paused.cost_usd <= 0.5 + 0.2 + 1e-9  # never more than the in-flight units over
    assert paused.completed < 20 and paused.projected_cost_usd == pytest.approx(2.0)
    assert any("budget reached" in line.message for line in orch.logs(job, level="warning"))


def test_quota_error_holds_the_job_then_it_continues_by_itself(orch, workdir: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("ABP_TEST_FLAG", str(tmp_path / "quota"))
    job = python_job(orch, workdir, "quota_once", n=3, concurrency=1, max_retries=0)
    orch.start(job, skip_test=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert done.status == "COMPLETED" and done.failed == 0  # max_retries=0, yet no retry was spent
    assert any("quota reached" in line.message for line in orch.logs(job, level="warning"))


def test_structured_output_is_validated_and_retried_with_feedback(orch, workdir: Path) -> None:
    schema = {"type": "object", "required": ["label", "score"],
              "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}
    job = python_job(orch, workdir, "jsonish", n=2, prompt="classify {{ row.name }}", output_schema=schema)
    orch.start(job, skip_test=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "COMPLETED", orch.results(job)
    rows = orch.results(job)
    assert all(r["data.label"] == "spam" and r["data.score"] == 0.9 and r["attempts"] == 2 for r in rows)


def test_resume_with_a_bigger_budget_finishes_the_job(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "priced", n=6, concurrency=1, budget_usd=0.25)
    orch.start(job, skip_test=True)
    assert wait_status(orch, job, {"PAUSED", "COMPLETED"}).pause_reason == "budget"
    with pytest.raises(InvalidSpec):
        orch.resume(job, budget_usd=-1)
    orch.resume(job, budget_usd=10.0)
    done = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert done.status == "COMPLETED" and done.cost_usd == pytest.approx(0.6)


def test_retry_right_after_cancel_and_resume_right_after_stop_keep_the_job_running(orch, workdir: Path,
                                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The old executor may still be draining when the next request arrives: it must not undo it."""
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.4")
    job = python_job(orch, workdir, "slow", n=8, concurrency=2)
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"RUNNING"})
    orch.cancel(job)
    orch.retry(job, include_cancelled=True)
    done = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=60)
    assert done.status == "COMPLETED" and done.completed == 8, done

    job2 = python_job(orch, workdir, "slow", n=8, concurrency=2, name="second")
    orch.start(job2, skip_test=True)
    wait_until(lambda: orch.status(job2).running > 0, what="units running")
    orch.stop(job2)
    orch.resume(job2)
    done = wait_status(orch, job2, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=60)
    assert done.status == "COMPLETED" and done.completed == 8, done


def test_a_retry_landing_as_the_pool_ends_is_not_overwritten_by_a_final_status(orch, workdir: Path) -> None:
    """The race behind "COMPLETED with 0 completed": the pool saw no unit left (a cancel had just
    cancelled them all, before the executor read the cancel), then a retry put them back to PENDING and
    the job back to RUNNING, then the executor's `finish` ran. It must leave the job RUNNING for the
    next pass, whatever counts it may have read before the retry landed."""
    import asyncio

    from agentic_batch.engine.executor import Executor
    from agentic_batch.engine.finish import finish
    from agentic_batch.engine.recorder import Recorder
    from agentic_batch.engine.run_state import StopReason

    job_id = python_job(orch, workdir, "echo", n=3)
    store = orch.store
    assert store.jobs.update_job(job_id, expect=["CREATED"], status="RUNNING")  # as the retry left it: all PENDING
    ex = Executor(job_id, store=store, settings=orch.settings)
    try:
        recorder = Recorder(store, ex.db, owner=ex.id, job_id=job_id)
        asyncio.run(finish(ex, store.jobs.get_job(job_id), None, recorder, StopReason.FINISHED))  # type: ignore[arg-type]
    finally:
        ex._pool_thread.shutdown()
    status = orch.status(job_id)
    assert status.status == "RUNNING" and status.pending == 3, status
    # counts read before the retry landed (all cancelled) cannot win either: the guard is in the update
    from agentic_batch.engine.finish import UNFINISHED

    assert not store.jobs.update_job(job_id, expect=["RUNNING"], status="CANCELLED", no_units_in=UNFINISHED)
    # nor a pause for a stop request that a `resume` has cleared meanwhile
    assert not store.jobs.update_job(job_id, expect=["RUNNING"], expect_control="stop", status="PAUSED")
    assert orch.status(job_id).status == "RUNNING"
