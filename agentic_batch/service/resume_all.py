"""`resume --all`: after a reboot (or a crash of the whole host), put an executor back on every job
that was RUNNING when the machine went down.

Why a sweep over the store rather than a list kept elsewhere: the store already says which jobs
should be running (status RUNNING) and which executor held each (pid and start time, so a pid
reused after the reboot is not mistaken for the old executor). A job whose executor is alive, here
or on another host sharing a PostgreSQL store, is left alone; the others are resumed one by one,
and a job that cannot be resumed is reported with the reason and does not stop the sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentic_batch.errors import AbpError
from agentic_batch.service import control
from agentic_batch.service.models import JobView, ResumeAllReport, ResumedJob
from agentic_batch.states import JobStatus
from agentic_batch.store.faults import store_error_for

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.store import JobRecord, Store


class ResumeAllMixin:
    """Needs `store`, `settings`, `status()` and `resume()` from `Orchestrator`."""

    store: Store
    settings: Settings

    if TYPE_CHECKING:
        def status(self, ref: str | int) -> JobView: ...
        def resume(self, ref: str | int, budget_usd: float | None = None, executors: int = 1) -> JobView: ...

    def resume_all(self) -> ResumeAllReport:
        """Resume every RUNNING job whose executor is gone; report each job (resumed / running / skipped)."""
        rows = [self._resume_one(job) for job in self.store.jobs.list_jobs([JobStatus.RUNNING])]
        rows.sort(key=lambda row: row.job_id)
        return ResumeAllReport(jobs=rows, resumed=sum(r.outcome == "resumed" for r in rows),
                               running=sum(r.outcome == "running" for r in rows),
                               skipped=sum(r.outcome == "skipped" for r in rows))

    def _resume_one(self, job: JobRecord) -> ResumedJob:
        if control.any_live_executor(self.store, self.settings, job.id):
            head = self.status(job.id).executor
            return ResumedJob(job_id=job.id, name=job.name, outcome="running", pid=head.pid, host=head.host,
                              reason=None)
        try:
            view = self.resume(job.id)
        except AbpError as exc:
            return ResumedJob(job_id=job.id, name=job.name, outcome="skipped", pid=None, host=None,
                              reason=exc.one_line())
        except Exception as exc:
            fault = store_error_for(exc)
            if fault is None:
                raise
            return ResumedJob(job_id=job.id, name=job.name, outcome="skipped", pid=None, host=None,
                              reason=fault.one_line())
        return ResumedJob(job_id=job.id, name=job.name, outcome="resumed", pid=view.executor.pid,
                          host=view.executor.host, reason=None)
