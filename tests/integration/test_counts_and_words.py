"""The words users see (README "Words"): every view counts `done`, `progress`, `rate` and `elapsed` the
same way, a job's final status describes all its units, and messages say what happened and what to do."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.mcp_server.shaping import status_summary
from agentic_batch.spec import JobSpec
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.funcs import ref


def make_job(orch: Any, workdir: Path, rows: list[dict[str, Any]], **kw: Any) -> int:
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JobSpec(name=kw.pop("name", "words"), source={"kind": "jsonl", "path": str(path), "key": "id"},
                   worker="python", worker_options={"function": ref("fail_as_told")}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def sample_running(orch: Any, job: int, until: set[str], timeout: float = 120) -> tuple[list[int], dict[str, Any]]:
    """The job's RUNNING count, read as fast as the store answers until the job reaches `until`."""
    samples: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(orch.store.units.count_units(job)["RUNNING"])
        job_record = orch.store.jobs.get_job(job)
        if job_record.status in until:
            return samples, orch.status(job)
    raise AssertionError(f"job {job} did not reach {until} in {timeout}s")


def test_running_never_exceeds_the_concurrency(orch, workdir: Path) -> None:
    """Results buffered in the executor but not yet written used to count as RUNNING next to the units
    claimed for their slots (9-10 at --concurrency 8)."""
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(3000)))
    spec = JobSpec(name="fast", source={"kind": "jsonl", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref("anoop")}, concurrency=8)
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    samples, final = sample_running(orch, job, {"COMPLETED", "FAILED", "PAUSED"})
    assert final.status == "COMPLETED" and final.completed == 3000
    assert max(samples) <= 8, sorted(samples)[-10:]
    assert max(samples) >= 2  # the sampler did see the job at work


def test_every_view_counts_done_the_same_and_the_error_says_how_units_failed(orch, workdir: Path) -> None:
    rows = [{"id": 0}, {"id": 1}, {"id": 2, "fail": "permanent"}, {"id": 3, "fail": "retryable"}, {"id": 4}]
    job = make_job(orch, workdir, rows, max_retries=1)
    orch.cancel_unit(job, next(r["unit"] for r in orch.results(job) if r["key"] == "4"))
    orch.start(job, skip_test=True)
    status = wait_status(orch, job, {"FAILED", "COMPLETED", "CANCELLED"})

    assert status.status == "FAILED"
    assert (status.completed, status.failed, status.cancelled) == (2, 2, 1)
    assert status.done == 5 and status.progress == 100.0
    # Unit 2 failed at once (a permanent error); unit 3 spent its retry: not "5 failed after retries".
    assert status.error == ("2 unit(s) failed: 1 permanently (errors that are not retried), "
                               "1 after 2 attempt(s), retries spent")
    listed = next(r for r in orch.list_jobs() if r.id == job)
    page = next(r for r in orch.jobs_page().items if r.id == job)  # REST /api/jobs and the dashboard
    for row in (listed, page):
        assert (row.done, row.total, row.progress) == (5, 5, 100.0), row
        assert row.rate == status.rate and row.elapsed_seconds == status.elapsed_seconds
    assert "5/5 done" in status_summary(status)  # MCP
    table = abp("list", cwd=workdir)
    assert table.returncode == 0 and "5/5" in table.stdout and "100.0%" in table.stdout, table.stdout
    panel = abp("status", str(job), cwd=workdir)
    assert "5/5 done (100.0%)" in panel.stdout, panel.stdout


def test_a_job_with_cancelled_units_does_not_end_completed(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, [{"id": i, "sleep": 0.3} for i in range(6)], concurrency=1)
    orch.start(job, skip_test=True)
    wait_until(lambda: orch.status(job).completed >= 1, what="a unit done")
    orch.cancel(job)
    wait_until(lambda: orch.status(job).executor.state != "running", what="the executor to exit")
    cancelled = [r for r in orch.results(job) if r["status"] == "CANCELLED"]
    assert len(cancelled) >= 2
    orch.retry_unit(job, cancelled[0]["unit"])  # one unit again; the others stay CANCELLED
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=30)
    assert final.status == "CANCELLED", final  # was COMPLETED with units still cancelled
    assert final.cancelled == len(cancelled) - 1 and final.done == 6
    assert f"{final.cancelled} unit(s) cancelled" in final.error


def test_rate_and_elapsed_leave_paused_time_out(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, [{"id": i, "sleep": 0.2} for i in range(8)], concurrency=1)
    orch.start(job, skip_test=True)
    wait_until(lambda: orch.status(job).completed >= 1, what="a unit done")
    orch.stop(job)
    wait_status(orch, job, {"PAUSED"})
    before = orch.status(job).elapsed_seconds
    time.sleep(2.5)
    paused = orch.status(job)
    assert paused.elapsed_seconds == before  # the clock stands still while PAUSED
    assert paused.rate == pytest.approx(paused.completed / paused.elapsed_seconds, rel=1e-3)
    orch.resume(job)
    final = wait_status(orch, job, {"COMPLETED"}, timeout=30)
    wall = final.finished_at - final.started_at
    assert final.elapsed_seconds <= wall - 2.5, final  # elapsed excludes the pause
    assert final.rate == pytest.approx(8 / final.elapsed_seconds, rel=1e-3)
    # And a finished job's clock stands still too (no "idle" time added while nothing runs).
    time.sleep(1.0)
    assert orch.status(job).elapsed_seconds == final.elapsed_seconds


def test_sync_says_how_to_run_the_new_units_and_edit_says_what_is_possible(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, [{"id": 0}, {"id": 1}])
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    edit = abp("edit", str(job), "--prompt", "x {{ id }}", cwd=workdir)
    assert edit.returncode != 0 and "stop" not in edit.stderr and "create a new job" in edit.stderr, edit.stderr
    with (workdir / "items.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": 2}) + "\n")
    synced = abp("sync", str(job), cwd=workdir)
    assert synced.returncode == 0, synced.stderr
    assert "1 new unit(s) added" in synced.stdout and f"`abp resume {job}`" in synced.stdout, synced.stdout
    assert orch.status(job).status == "PAUSED"
