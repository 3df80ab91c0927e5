"""Deleting and pruning jobs through the service, with real detached executors, on both stores: every
row and file the job made goes, other jobs keep theirs, a RUNNING job needs `force`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentic_batch.errors import IllegalState, InvalidSpec, NotFound
from agentic_batch.spec import JobSpec
from agentic_batch.store.job_deletion import DeletedBatch, job_tables
from tests.fixtures.abp import processes_with, wait_status, wait_until
from tests.fixtures.funcs import ref
from tests.fixtures.git_repos import edited_job, make_repo, sh
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)


def make_job(orch, workdir: Path, n: int = 3, func: str = "echo", name: str = "del", **kw) -> int:  # type: ignore[no-untyped-def]
    path = workdir / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "sleep": kw.pop("sleep", 0.01)}) + "\n" for i in range(n)))
    spec = JobSpec(name=name, source={"kind": "jsonl", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref(func)}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def rows_of(orch, job: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: count for name, count in orch.store.deletion.count_rows(job).items() if count}


def test_delete_removes_rows_and_files_and_leaves_other_jobs(orch, workdir: Path) -> None:
    doomed, kept = make_job(orch, workdir, name="doomed"), make_job(orch, workdir, name="kept")
    for job in (doomed, kept):
        orch.start(job, skip_test=True)
        wait_status(orch, job, {"COMPLETED"})
    assert {"units", "events", "logs", "executors"} <= set(rows_of(orch, doomed))
    job_dir = orch.settings.job_dir(doomed)
    assert (job_dir / "executor.log").is_file()
    before = rows_of(orch, kept)
    result = orch.delete([str(doomed)])
    gone = result.jobs[0]
    assert (gone.job_id, gone.deleted, gone.status, gone.units, gone.files_removed) == (doomed, True, "COMPLETED", 3,
                                                                                        True)
    assert gone.rows > 3
    assert rows_of(orch, doomed) == {} and not job_dir.exists()
    assert not list(orch.settings.run_dir.glob(f"job-{doomed}.*"))
    with pytest.raises(NotFound):
        orch.status(doomed)
    assert rows_of(orch, kept) == before and orch.status(kept).completed == 3


def test_a_running_job_needs_force_which_cancels_and_waits(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, n=20, func="slow", sleep=5, concurrency=2)
    orch.start(job, skip_test=True)
    status = wait_status(orch, job, {"RUNNING"})
    pid = status.executor.pid
    with pytest.raises(IllegalState, match=r"cannot delete job \d+: RUNNING") as refused:
        orch.delete([job])
    assert "force" in (refused.value.hint or "")
    assert orch.status(job).status == "RUNNING"
    result = orch.delete([job], force=True)
    assert result.jobs[0].cancelled and result.jobs[0].status == "CANCELLED"
    assert rows_of(orch, job) == {}
    # it released its lock (its last act on the job) before the rows went; the process itself exits next
    wait_until(lambda: pid not in processes_with("agentic_batch"), timeout=10, what="the executor to exit")


def test_delete_resolves_every_job_before_deleting_any(orch, workdir: Path) -> None:
    job = make_job(orch, workdir)
    with pytest.raises(NotFound):
        orch.delete([job, 9999])
    with pytest.raises(InvalidSpec, match="no job given"):
        orch.delete([])
    assert orch.status(job).total == 3


def test_prune_by_status_and_age_with_a_dry_run(orch, workdir: Path) -> None:
    old, failed, fresh, waiting = (make_job(orch, workdir, name=n) for n in ("old", "failed", "fresh", "waiting"))
    for job in (old, fresh):
        orch.start(job, skip_test=True)
        wait_status(orch, job, {"COMPLETED"})
    orch.cancel(failed)
    orch.store.jobs.update_job(old, finished_at=time.time() - 8 * 86400)
    listed = orch.prune(older_than="7d", dry_run=True)
    assert [j.job_id for j in listed.jobs] == [old] and not listed.jobs[0].deleted and listed.older_than_s == 7 * 86400
    assert orch.status(old).total == 3  # a dry run deletes nothing
    cancelled = orch.prune(statuses="cancelled")
    assert [j.job_id for j in cancelled.jobs] == [failed] and cancelled.statuses == ["CANCELLED"]
    everything = orch.prune()
    assert sorted(j.job_id for j in everything.jobs) == sorted([old, fresh])
    assert [j.id for j in orch.list_jobs()] == [waiting]  # CREATED is never pruned
    with pytest.raises(InvalidSpec, match="prune removes completed, cancelled or failed jobs, not 'created'"):
        orch.prune(statuses="created")
    with pytest.raises(InvalidSpec, match="older_than: '7 days' is not an age"):
        orch.prune(older_than="7 days")


def test_deletion_runs_in_batches_and_covers_every_job_table(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, n=1)
    units = [{"job_id": job, "seq": i, "number": i + 2, "key": f"k{i}", "payload": {}, "status": "PENDING"}
             for i in range(3000)]
    from agentic_batch.store.schema import units as units_table

    with orch.store.database.write() as conn:
        conn.execute(units_table.insert(), units)
    batches: list[DeletedBatch] = []
    deleted = orch.store.deletion.delete_job(job, on_batch=batches.append)
    unit_batches = [b for b in batches if b.table == "units"]
    assert len(unit_batches) > 1 and sum(b.rows for b in unit_batches) == 3001
    assert deleted == sum(b.rows for b in batches) + 1  # and the job row
    assert {"units", "events", "logs", "executors"} <= {t.name for t in job_tables()}


def test_an_isolated_jobs_worktrees_and_branches_go_but_the_applied_branch_stays(orch, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    job = edited_job(orch, repo)
    orch.apply(job, units="3")
    assert sh(repo, "branch", "--list", f"abp/{job}/*").strip()
    result = orch.delete([job]).jobs[0]
    assert result.branches_removed == 5 and result.kept == [f"abp/{job}/applied"]
    assert sh(repo, "branch", "--list", f"abp/{job}/*").split() == [f"abp/{job}/applied"]
    assert not orch.settings.job_dir(job).exists()
    assert len(sh(repo, "worktree", "list").splitlines()) == 1  # only the main checkout
