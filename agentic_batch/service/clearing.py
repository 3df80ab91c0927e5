"""Clearing jobs (`abp delete`, `abp prune`, `DELETE /api/jobs/{job}`, MCP `delete_job`): a mixin of
`Orchestrator`.

A job goes whole: its store rows (units with their results, attempts' fields and review marks,
events, logs, executors), its directory under ABP_HOME (worktrees, workspaces, full outputs, the
executor log, a private Claude config) and, for an isolated job, its unit branches (the applied
branch is the user's result and stays, as `abp clean` leaves it).

Order matters for "nothing stranded": the job is first hidden (status CREATING, owned by this
process: no listing shows it, nothing can start it, and if this process dies half-way the next
`create` on this host finishes the removal, as it does for an abandoned create); then its files; then
its rows, in short transactions (`store.job_deletion`), so deleting a 100,000-unit job never holds
the store for long while other jobs run. A RUNNING job is refused unless `force`, which cancels it
and waits for its executors to stop first.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agentic_batch.errors import AbpError, IllegalState, InvalidSpec, field_ref
from agentic_batch.service import control
from agentic_batch.service.clearing_models import DeletedJob, DeletedJobs, PrunedJobs
from agentic_batch.states import JobStatus

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.service.models import JobView
    from agentic_batch.store import JobRecord, Store

#: What `prune` removes by default, and all it may remove (a job that can still run is never pruned).
PRUNABLE = (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED)
#: Seconds per unit of an age (`7d`).
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
#: Beyond the executors' grace for a cancel: how long `force` waits for them to be gone.
STOP_WAIT_EXTRA_SECONDS = 15.0


def parse_age(text: str | float | int | None) -> float | None:
    """`90s`, `30m`, `12h`, `7d`, `2w` (a bare number is seconds) as seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _AGE.match(str(text))
        if not match:
            raise InvalidSpec(f"{field_ref('older_than')}: {text!r} is not an age", hint="use 90s, 30m, 12h, 7d or 2w")
        seconds = float(match.group(1)) * _AGE_UNITS[match.group(2) or "s"]
    if not 0 <= seconds < 1e10:
        raise InvalidSpec(f"{field_ref('older_than')} must be between 0 and 1e10 seconds")
    return seconds


def parse_prunable(text: str | Sequence[str] | None) -> list[JobStatus]:
    if text is None:
        return list(PRUNABLE)
    words = text.split(",") if isinstance(text, str) else list(text)
    statuses: list[JobStatus] = []
    for word in (w.strip().upper() for w in words):
        if word not in PRUNABLE:
            raise InvalidSpec(f"{field_ref('status')}: prune removes completed, cancelled or failed jobs, not "
                              f"{word.lower() or 'an empty word'!r}")
        if word not in statuses:
            statuses.append(JobStatus(word))
    if not statuses:
        raise InvalidSpec(f"{field_ref('status')} is empty", hint="use completed, cancelled and/or failed")
    return statuses


class ClearMixin:
    """Needs `store`, `settings`, `job()`, `cancel()` and `settle_test()` from `Orchestrator`."""

    store: Store
    settings: Settings

    if TYPE_CHECKING:
        def job(self, ref: str | int) -> JobRecord: ...
        def cancel(self, ref: str | int) -> JobView: ...
        def settle_test(self, job: JobRecord) -> JobRecord: ...

    def delete(self, refs: Sequence[str | int], force: bool = False) -> DeletedJobs:
        """Delete the jobs; every reference is resolved and every job checked before any is touched."""
        if not refs:
            raise InvalidSpec("no job given", hint="name the jobs to delete by id or name")
        jobs: dict[int, JobRecord] = {}
        for ref in refs:
            job = self.settle_test(self.job(ref))  # a test run under way refuses (TestRunning)
            jobs[job.id] = job
        running = [j.id for j in jobs.values() if j.status == JobStatus.RUNNING]
        if running and not force:
            which = ", ".join(str(i) for i in running)
            raise IllegalState(f"cannot delete job{'s' if len(running) > 1 else ''} {which}: RUNNING",
                               hint=f"stop or cancel it first, or give {field_ref('force')} (cancels, then deletes)")
        return DeletedJobs(jobs=[self._delete_job(job) for job in jobs.values()])

    def prune(self, statuses: str | Sequence[str] | None = None, older_than: str | float | None = None,
              dry_run: bool = False) -> PrunedJobs:
        """Delete every job in `statuses` (default: completed, cancelled, failed) that ended more than
        `older_than` ago (default: any time); `dry_run` lists them instead."""
        wanted = parse_prunable(statuses)
        age = parse_age(older_than)
        now = time.time()
        matched = [j for j in self.store.jobs.list_jobs(wanted)
                   if age is None or now - (j.finished_at or j.created_at) > age]
        if dry_run:
            gone = [self._describe(j, deleted=False) for j in matched]
        else:
            gone = []
            for job in matched:
                try:
                    gone.append(self._delete_job(job))
                except IllegalState:  # it changed meanwhile (a retry made it RUNNING): not ours to prune
                    continue
        return PrunedJobs(dry_run=dry_run, statuses=wanted, older_than_s=age, jobs=gone)

    # -- one job ----------------------------------------------------------------------------------

    def _describe(self, job: JobRecord, deleted: bool, **fields: object) -> DeletedJob:
        units = sum(self.store.units.count_units(job.id).values())
        return DeletedJob.model_validate({"job_id": job.id, "name": job.name, "status": job.status, "units": units,
                                          "finished_at": job.finished_at, "deleted": deleted, **fields})

    def _delete_job(self, job: JobRecord) -> DeletedJob:
        cancelled = False
        if job.status == JobStatus.RUNNING:
            self.cancel(job.id)
            cancelled = True
        self._wait_for_executors(job)
        job = self.job(job.id)
        result = self._describe(job, deleted=True, cancelled=cancelled)
        from agentic_batch.engine.procs import hostname

        if not self.store.jobs.update_job(job.id, expect=[job.status], status=JobStatus.CREATING,
                                          creator_pid=os.getpid(), creator_host=hostname()):
            raise IllegalState(f"job {job.id} changed state meanwhile; nothing was deleted", hint="try again")
        warnings: list[str] = []
        branches, kept = self._remove_worktrees(job, warnings)
        files = self._remove_files(job, warnings)
        rows = self.store.jobs.delete_job(job.id)
        return result.model_copy(update={"rows": rows, "branches_removed": branches, "kept": kept,
                                         "files_removed": files, "warnings": warnings})

    def _wait_for_executors(self, job: JobRecord) -> None:
        """Executors of a cancelled job stop within the cancel grace; deleting under one would strand
        its last writes. Nothing is deleted if they are still there after that."""
        limit = self.settings.cancel_grace_seconds + STOP_WAIT_EXTRA_SECONDS
        deadline = time.monotonic() + limit
        while control.any_live_executor(self.store, self.settings, job.id):
            if time.monotonic() > deadline:
                raise IllegalState(f"job {job.id}'s executors did not stop within {limit:g}s; nothing was deleted",
                                   hint="see `abp status` and try again")
            time.sleep(0.1)

    def _remove_worktrees(self, job: JobRecord, warnings: list[str]) -> tuple[int, list[str]]:
        """An isolated job's worktrees and unit branches (`isolation.cleanup`, as `abp clean`)."""
        if not (job.isolated and job.repo and Path(job.repo).is_dir()):
            return 0, []
        from agentic_batch.isolation.cleanup import delete_job_branches
        from agentic_batch.service.review import git_errors, job_worktrees, lock_dir

        try:
            with git_errors(job.repo):
                job_worktrees(self.settings, job).remove_all()
                branches = delete_job_branches(Path(job.repo), job.id, lock_dir(self.settings))
        except AbpError as exc:  # the repository moved or is locked: the job goes anyway, the user is told
            warnings.append(f"branches and worktrees not removed: {exc.one_line()}")
            return 0, []
        return len(branches.removed), branches.kept

    def _remove_files(self, job: JobRecord, warnings: list[str]) -> bool:
        """The job's directory under ABP_HOME and its executor lock files."""
        directory = self.settings.job_dir(job.id)
        existed = directory.exists()
        if existed:
            shutil.rmtree(directory, onerror=lambda _f, path, exc: warnings.append(f"could not remove {path}: {exc}"))
        run_dir = self.settings.run_dir
        if run_dir.is_dir():
            for path in [*run_dir.glob(f"job-{job.id}.*lock"), run_dir / f"job-{job.id}.spawn"]:
                path.unlink(missing_ok=True)
        return existed and not directory.exists()
