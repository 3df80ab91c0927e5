"""The Orchestrator: create / test / approve / reject / start / stop / resume / cancel / retry /
edit-prompt / status / list / results / export (and, for isolated jobs, diff / review / apply /
clean: ReviewMixin; adding items: AddMixin; delete / prune: ClearMixin), for every interface alike."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentic_batch import results as result_rows
from agentic_batch.config import Settings, load_settings
from agentic_batch.errors import IllegalState, InvalidSpec, field_ref
from agentic_batch.refs import MAX_ID
from agentic_batch.service import control
from agentic_batch.service.cache import apply_cache, requeue_changed, run_plan
from agentic_batch.service.browse import BrowseMixin, check_cursor, parse_statuses
from agentic_batch.service.adding import AddMixin
from agentic_batch.service.clearing import ClearMixin
from agentic_batch.service.error_groups import ErrorGroupsMixin
from agentic_batch.service.resume_all import ResumeAllMixin
from agentic_batch.service.review import ReviewMixin
from agentic_batch.service.test_flow import TestFlowMixin, start_hint
from agentic_batch.service.models import (ActiveUnit, CreatedJob, EventView, ExportResult, JobSummary, JobView,
                                          LogLine, ResultRow, RetriedJob, RunPlan, StartedJob, SyncResult, UnitDetail,
                                          UnitView)
from agentic_batch.service.readout import active_unit_fields, job_rows, resolve_job, unit_view_fields
from agentic_batch.service.views import event_rows, job_status, log_rows
from agentic_batch.store import LOG_LEVELS, UNIT_STATUSES, JobRecord, Store, UnitRecord, open_store
from agentic_batch.states import TERMINAL_JOB_STATUSES, JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.spec import JobSpec

# Creation, prompts (Jinja2) and the JobSpec (every source kind) are imported by the methods that use
# them: the read commands (`abp list`, `abp status`, `abp show`) construct an Orchestrator too, and
# should cost a user no more than their queries (tests/unit/test_cli_imports.py).

#: Events or log lines in one read; executors one command may start on a host.
MAX_EVENTS = 10_000
MAX_EXECUTORS = 64


class Orchestrator(TestFlowMixin, BrowseMixin, ReviewMixin, ResumeAllMixin, AddMixin, ClearMixin, ErrorGroupsMixin):
    def __init__(self, store: Store | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = store or open_store(self.settings.db_url)

    # -- lookups --------------------------------------------------------------------------------

    def job(self, ref: str | int) -> JobRecord:
        """A job by id, by name when that name is unique, or `last` (`readout.resolve_job`)."""
        return resolve_job(self.store, ref)

    def _expect(self, job: JobRecord, allowed: set[str], action: str, hint: str | None = None) -> None:
        if job.status not in allowed:
            raise IllegalState(f"cannot {action} job {job.id}: it is {job.status}", hint=hint)

    # -- create ---------------------------------------------------------------------------------

    def create(self, spec: JobSpec | dict[str, Any], cwd: Path | None = None) -> CreatedJob:
        from pydantic import ValidationError

        from agentic_batch.service.creation import create_job
        from agentic_batch.spec import JobSpec, describe_validation_error

        if not isinstance(spec, JobSpec):
            try:
                spec = JobSpec.model_validate(spec)
            except ValidationError as exc:
                raise InvalidSpec(describe_validation_error(exc)) from None
        return create_job(self.store, spec, cwd or Path.cwd())

    def sync(self, ref: str | int) -> SyncResult:
        """Add the items that appeared in the source since the job was created (keys already there are skipped)."""
        from agentic_batch.service.creation import sync_job

        job = self.job(ref)
        self._expect(job, {JobStatus.CREATED, JobStatus.TESTING, JobStatus.PAUSED, JobStatus.COMPLETED,
                           JobStatus.FAILED, JobStatus.RUNNING}, "sync")
        added, existing = sync_job(self.store, job.id, job.source, job.workdir)
        if added and job.status == JobStatus.COMPLETED:
            self.store.jobs.update_job(job.id, expect=[JobStatus.COMPLETED], status=JobStatus.PAUSED,
                                       pause_reason="new items", finished_at=None)
        status = self.job(job.id).status
        return SyncResult(job_id=job.id, added=added, existing=existing, status=JobStatus(status),
                          next=_sync_next(status) if added else None)

    # -- test first (the test run itself: TestFlowMixin) --------------------------------------------

    def test_report(self, ref: str | int, unit_id: int | None = None) -> UnitDetail:
        job = self.job(ref)
        unit_id = unit_id or job.test_unit_id
        record = self.store.units.get_unit(unit_id) if unit_id is not None else None
        if record is None:
            raise IllegalState(f"job {job.id} has no test run yet", hint=f"run `abp start {job.id}`")
        return self._unit_detail(job, record)

    def approve(self, ref: str | int, executors: int = 1) -> StartedJob:
        job = self.job(ref)
        self._check_executors(executors, job)
        job = self.settle_test(job)
        self._expect(job, {JobStatus.TESTING}, "approve", _approve_hint(job))
        if job.test_unit_id:  # a failed test unit gets another chance in the real run
            self.store.units.set_units_status(job.id, [UnitStatus.FAILED], UnitStatus.PENDING,
                                              unit_ids=[job.test_unit_id], reset=True)
        tested = [job.test_unit_id] if job.test_unit_id else []
        return self._run(job, expect=[JobStatus.TESTING], executors=executors, tested=tested)

    def reject(self, ref: str | int) -> JobView:
        job = self.settle_test(self.job(ref))
        self._expect(job, {JobStatus.TESTING}, "reject", _approve_hint(job).replace("approve", "reject", 1))
        if job.test_unit_id:
            self.store.units.reset_unit(job.test_unit_id)
        self.store.jobs.update_job(job.id, expect=[JobStatus.TESTING], status=JobStatus.CREATED)
        return self.status(job.id)

    def start(self, ref: str | int, skip_test: bool = False, executors: int = 1) -> StartedJob | UnitDetail:
        """CREATED: run the test unit (or, skipping it, start the executor). Returns status or test report."""
        job = self.job(ref)
        self._check_executors(executors, job)
        job = self.settle_test(job)  # a lost test run makes the job CREATED again: it is tested anew
        if job.status == JobStatus.TESTING:
            raise IllegalState(f"job {job.id} is TESTING: its test result is waiting for you",
                               hint=f"`abp start {job.id} --approve` or `--reject`")
        self._expect(job, {JobStatus.CREATED}, "start", start_hint(job))
        if skip_test or self.settings.skip_test:
            return self._run(job, expect=[JobStatus.CREATED], executors=executors)
        return self.test(job.id)

    def _check_executors(self, executors: int, job: JobRecord | None = None) -> None:
        if not 1 <= executors <= MAX_EXECUTORS:
            raise InvalidSpec(f"{field_ref('executors')} must be between 1 and {MAX_EXECUTORS}")
        if executors > 1 and job is not None and job.batch_api:
            raise InvalidSpec(f"a {field_ref('batch_api')} job runs one executor (the provider does the work): "
                              f"drop {field_ref('executors')}")

    def add_executors(self, ref: str | int, count: int) -> JobView:
        """Start `count` more executors on this host for a RUNNING job."""
        job = self.job(ref)
        self._expect(job, {JobStatus.RUNNING}, "add executors to")
        self._check_executors(count + 1, job)
        control.join(self.settings, job, count)
        return self.status(job.id)

    def _run(self, job: JobRecord, expect: list[str], executors: int = 1, tested: list[int] | None = None,
             unchanged: int = 0) -> StartedJob:
        """Into RUNNING with an executor. A `--cache` job's pending units are served from the result
        cache first (service/cache.py), so the executor only ever sees the units left to run."""
        plan = run_plan(self.store, job, apply_cache(self.store, job, completed_ids=tested or ()), unchanged)
        now = time.time()
        fields: dict[str, Any] = {"status": JobStatus.RUNNING, "control": None, "pause_reason": None,
                                  "finished_at": None, "error": None}
        if job.started_at is None:
            fields["started_at"] = now
        if not self.store.jobs.update_job(job.id, expect=expect, **fields):
            raise IllegalState(f"job {job.id} changed state meanwhile; try again")
        fresh = self.job(job.id)
        self.store.changes.notify(job.id, "running")
        pid, started = control.spawn(self.store, self.settings, fresh)
        control.join(self.settings, fresh, executors - 1)
        if not started:
            self.store.logs.append_logs([{"job_id": job.id, "level": "info",
                                          "message": f"job running again; executor pid {pid} was already running"}])
        return self._started(job, plan)

    def _started(self, job: JobRecord, plan: RunPlan) -> StartedJob:
        """The job's status and its plan (counted before the executor started, which may have run units since)."""
        return StartedJob(**self.status(job.id).model_dump(), plan=plan)

    # -- running jobs ---------------------------------------------------------------------------

    def stop(self, ref: str | int) -> JobView:
        """Ask the executors to pause: in-flight units finish (within a grace period), the rest wait."""
        job = self.job(ref)
        self._expect(job, {JobStatus.RUNNING}, "stop", "only a RUNNING job can be stopped")
        # Through the store, not a signal: every executor on every host reads `control` within a second
        # (at once on PostgreSQL), and a `resume` arriving while they drain can simply clear it.
        self.store.jobs.update_job(job.id, expect=[JobStatus.RUNNING], control="stop")
        self.store.changes.notify(job.id, "stop")
        if not control.any_live_executor(self.store, self.settings, job.id):
            control.reclaim_dead_executors(self.store, self.settings, job.id)
            self.store.jobs.update_job(job.id, expect=[JobStatus.RUNNING], status=JobStatus.PAUSED, control=None,
                                       pause_reason="stopped")
        return self.status(job.id)

    def resume(self, ref: str | int, budget_usd: float | None = None, executors: int = 1) -> StartedJob:
        """PAUSED (or RUNNING with a dead executor): reclaim lost units and start an executor.

        `budget_usd` replaces the job's budget (e.g. after it paused with reason "budget")."""
        from agentic_batch.spec import MAX_BUDGET_USD

        job = self.job(ref)
        self._expect(job, {JobStatus.PAUSED, JobStatus.RUNNING}, "resume", _resume_hint(job))
        self._check_executors(executors, job)
        if budget_usd is not None:
            if not 0 < budget_usd <= MAX_BUDGET_USD:  # also refuses nan
                raise InvalidSpec(f"{field_ref('budget_usd')} must be greater than 0 and at most {MAX_BUDGET_USD:g}")
            self.store.jobs.update_job(job.id, budget_usd=budget_usd)
            job = self.job(job.id)
        if job.status == JobStatus.PAUSED:
            try:
                return self._run(job, expect=[JobStatus.PAUSED], executors=executors)
            except IllegalState:
                # Another resume (or the dashboard) won the race and it is RUNNING now: resuming a
                # running job is "make sure an executor works on it", which the branch below does.
                job = self.job(job.id)
                if job.status != JobStatus.RUNNING:
                    raise
        if not self.store.jobs.update_job(job.id, expect=[JobStatus.RUNNING], control=None):
            # It left RUNNING since we looked (its executor just finished draining a stop and paused
            # it): resume it from there, rather than rely on an executor that is leaving.
            return self.resume(job.id, executors=executors)
        # units added by a sync, or re-rendered by an edit
        plan = run_plan(self.store, job, apply_cache(self.store, job, new_only=True))
        control.spawn(self.store, self.settings, job)
        control.join(self.settings, job, executors - 1)
        return self._started(job, plan)

    def cancel(self, ref: str | int) -> JobView:
        job = self.job(ref)
        if job.status in TERMINAL_JOB_STATUSES:
            raise IllegalState(f"cannot cancel job {job.id}: it is already {job.status}")
        if not self.store.jobs.update_job(job.id, expect=[job.status], status=JobStatus.CANCELLED, control="cancel",
                                          finished_at=time.time()):
            raise IllegalState(f"job {job.id} changed state meanwhile; try again")
        self.store.units.set_units_status(job.id, [UnitStatus.PENDING, UnitStatus.RUNNING], UnitStatus.CANCELLED)
        self.store.changes.notify(job.id, "cancel")  # executors see the CANCELLED status within a second
        if job.batch_api and not control.any_live_executor(self.store, self.settings, job.id):
            self._cancel_provider_batches(job)
        self.store.logs.append_logs([{"job_id": job.id, "level": "info", "message": "job cancelled"}])
        return self.status(job.id)

    def _cancel_provider_batches(self, job: JobRecord) -> None:
        """No executor will see the cancel: cancel the job's provider batches from here. A provider that
        cannot be reached is logged, not raised: the job is cancelled either way (its units are)."""
        from agentic_batch.engine.batch_loop import cancel_batches_now  # the engine only when it is needed

        try:
            count = cancel_batches_now(self.store, job)
        except Exception as exc:  # the provider's error, a missing key: say so in the job's log
            self.store.logs.append_logs([{"job_id": job.id, "level": "warning",
                                          "message": f"could not cancel the job's provider batches: {exc}"}])
            return
        if count:
            self.store.logs.append_logs([{"job_id": job.id, "level": "info",
                                          "message": f"{count} provider batch(es) cancelled"}])

    def retry(self, ref: str | int, include_cancelled: bool = False, error_group: int | None = None) -> RetriedJob:
        """Failed units (and, if asked, cancelled ones; or only those of one error group) back to PENDING
        with fresh retries; run again."""
        job = self.job(ref)
        self._expect(job, {JobStatus.FAILED, JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.CANCELLED,
                           JobStatus.RUNNING}, "retry")
        if error_group is not None and include_cancelled:
            raise InvalidSpec(f"give {field_ref('error_group')} or {field_ref('include_cancelled')}, not both",
                              hint="an error group holds failed units only")
        key = self.error_group_key(job, error_group) if error_group is not None else None
        statuses = [UnitStatus.FAILED, UnitStatus.CANCELLED] if include_cancelled else [UnitStatus.FAILED]
        # A --cache job whose prompt was edited: its completed units whose prompt changed run again too.
        requeued, unchanged = (requeue_changed(self.store, job) if job.status != JobStatus.RUNNING and key is None
                               else (0, 0))
        count = self.store.units.set_units_status(job.id, statuses, UnitStatus.PENDING, reset=True, error_group=key)
        if count + requeued == 0:
            raise IllegalState(f"job {job.id} has no {' or '.join(s.lower() for s in statuses)} units to retry"
                               + (f" in error group {error_group}" if key is not None else ""),
                               hint=f"with {field_ref('cache')}, a retry also re-runs the completed units whose "
                                    "prompt an edit changed" if job.cache and key is None else None)
        what = f" (error group {error_group}: {key.signature})" if key is not None else ""
        if count:
            self.store.logs.append_logs([{"job_id": job.id, "level": "info",
                                          "message": f"{count} unit(s) queued for retry{what}"}])
        if job.status == JobStatus.RUNNING:
            plan = run_plan(self.store, job, apply_cache(self.store, job))
            self.store.changes.notify(job.id, "retry")
            control.spawn(self.store, self.settings, job)
            return RetriedJob(**self._started(job, plan).model_dump(), retried=count)
        return RetriedJob(**self._run(job, expect=[job.status], unchanged=unchanged).model_dump(),
                          retried=count + requeued)

    def edit_prompt(self, ref: str | int, template: str) -> JobView:
        """Replace the prompt template; units not yet completed will use it."""
        from agentic_batch.prompts import compile_template, validate

        job = self.settle_test(self.job(ref))
        editable: set[str] = {JobStatus.CREATED, JobStatus.TESTING, JobStatus.PAUSED, JobStatus.FAILED}
        if job.cache:  # a retry then re-runs only the units whose prompt changed
            editable.add(JobStatus.COMPLETED)
        self._expect(job, editable, "edit the prompt of", _edit_hint(job))
        if not template.strip():
            raise InvalidSpec("the prompt template is empty")
        compile_template(template)
        sample = [u.payload for u in itertools.islice(self.store.units.iter_units(job.id, batch_size=3), 3)]
        validate(template, sample, unit={"id": 0, "key": "", "seq": 0, "attempt": 1},
                 job={"id": job.id, "name": job.name})
        if job.status == JobStatus.TESTING:
            if job.test_unit_id:
                self.store.units.reset_unit(job.test_unit_id)
            self.store.jobs.update_job(job.id, expect=[JobStatus.TESTING], status=JobStatus.CREATED)
        self.store.jobs.update_job(job.id, prompt_template=template, intent=None)
        self.store.cache.forget_fingerprints(job.id)  # the units not completed will be asked something else
        return self.status(job.id)

    # -- reading --------------------------------------------------------------------------------

    def status(self, ref: str | int) -> JobView:
        return job_status(self.store, self.settings, self.job(ref))

    def list_jobs(self, status: str | None = None, name: str | None = None, limit: int | None = None,
                  offset: int = 0) -> list[JobSummary]:
        return [JobSummary.model_validate(row) for row in job_rows(self.store, status, name, limit, offset)]

    def unit(self, ref: str | int, unit_ref: str | int, events_limit: int = 2000) -> UnitDetail:
        """One unit by its number in the job, or by `key:KEY` (see `_unit_record`), with its conversation."""
        job = self.job(ref)
        return self._unit_detail(job, self._unit_record(job, unit_ref), events_limit)

    def unit_view(self, ref: str | int, unit_ref: str | int) -> UnitView:
        """One unit without its conversation."""
        job = self.job(ref)
        return self._unit_view(job, self._unit_record(job, unit_ref))

    def _unit_view(self, job: JobRecord, unit: UnitRecord) -> UnitView:
        """The unit; a prompt not rendered yet (the unit has not run) is previewed from the template."""
        return UnitView.model_validate(unit_view_fields(self.store, job, unit))

    def _unit_detail(self, job: JobRecord, unit: UnitRecord, events_limit: int = 2000) -> UnitDetail:
        events = event_rows(self.store, self.store.events.list_events(unit_id=unit.id, limit=events_limit), unit.number)
        return UnitDetail(**self._unit_view(job, unit).model_dump(), events=events)

    def events(self, ref: str | int, unit_ref: str | int | None = None, after: int = 0,
               limit: int = 500) -> list[EventView]:
        job = self.job(ref)
        check_cursor("after", after)
        if not 1 <= limit <= MAX_EVENTS:
            raise InvalidSpec(f"page size {limit} is out of range", hint=f"use 1 to {MAX_EVENTS}")
        unit = self._unit_record(job, unit_ref) if unit_ref is not None else None
        records = self.store.events.list_events(job_id=job.id, unit_id=unit.id if unit else None, after=after,
                                                limit=limit)
        return event_rows(self.store, records, unit.number if unit else None)

    def results(self, ref: str | int, status: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[ResultRow]:
        job = self.job(ref)
        statuses = parse_statuses(status, list(UNIT_STATUSES), "unit")
        check_cursor("offset", offset)
        if limit is not None and not 1 <= limit <= MAX_ID:
            raise InvalidSpec(f"limit {limit} is out of range", hint=f"use 1 to {MAX_ID}")
        if limit is None and offset == 0:
            return list(result_rows.iter_rows(self.store, job.id, statuses))
        page = self.store.units.page_units(job.id, statuses, limit if limit is not None else 2**31 - 1, offset)
        return list(result_rows.unit_rows(self.store, page))

    def export(self, ref: str | int, fmt: str = "jsonl", status: str | None = None) -> Iterator[str]:
        job = self.job(ref)
        statuses = parse_statuses(status, list(UNIT_STATUSES), "unit")
        return result_rows.iter_export(self.store, job.id, fmt, statuses)

    def export_to(self, ref: str | int, path: Path, fmt: str | None = None,
                  status: str | None = None, overwrite: bool = True) -> ExportResult:
        """Write the results to `path`; an existing file only with `overwrite`, never a directory."""
        job = self.job(ref)
        if path.is_dir():
            raise InvalidSpec(f"cannot write {path}: it is a directory", hint="give a file path")
        if path.exists() and not overwrite:
            raise InvalidSpec(f"{path} already exists", hint="choose another path, or overwrite it on purpose")
        fmt = fmt or {".csv": "csv", ".json": "json"}.get(path.suffix.lower(), "jsonl")
        statuses = parse_statuses(status, list(UNIT_STATUSES), "unit")
        if not path.parent.is_dir():
            raise InvalidSpec(f"cannot write {path}: directory {path.parent} does not exist")
        rows = result_rows.write_export(self.store, job.id, fmt, path, statuses)
        return ExportResult.model_validate({"job_id": job.id, "path": str(path), "format": fmt, "rows": rows})

    def logs(self, ref: str | int, level: str = "info", after: int = 0, limit: int = 500,
             unit: str | int | None = None, text: str | None = None) -> list[LogLine]:
        job = self.job(ref)
        if level not in LOG_LEVELS:
            raise InvalidSpec(f"unknown log level {level!r}", hint=f"use one of {', '.join(LOG_LEVELS)}")
        check_cursor("after", after)
        if not 1 <= limit <= MAX_EVENTS:
            raise InvalidSpec(f"limit {limit} is out of range", hint=f"use 1 to {MAX_EVENTS}")
        unit_id = self._unit_record(job, unit).id if unit is not None else None
        return log_rows(self.store, self.store.logs.list_logs(job.id, min_level=level, after=after, limit=limit,
                                                              unit_id=unit_id, text=text))

    def active_units(self, ref: str | int, limit: int = 20) -> list[ActiveUnit]:
        """Units running now, each with its newest event (what the agent is doing)."""
        return [ActiveUnit.model_validate(u) for u in active_unit_fields(self.store, self.job(ref), limit)]


def _approve_hint(job: JobRecord) -> str:
    if job.status == JobStatus.CREATED:
        return f"run the test first: `abp start {job.id}`"
    return "approve applies to a TESTING job (after `abp start`)"


def _edit_hint(job: JobRecord) -> str:
    hints: dict[str, str] = {
        JobStatus.RUNNING: f"stop it first (`abp stop {job.id}`), edit, then `abp resume {job.id}`",
        JobStatus.COMPLETED: "every unit has completed with it; to run the items with another prompt, create a new job "
                             "(with --cache, an edit and a retry re-run only the units whose prompt changed)",
        JobStatus.CANCELLED: "to run the items with another prompt, create a new job"}
    return hints.get(job.status, "")


def _sync_next(status: str) -> Literal["resume", "retry", "start", "approve"] | None:
    """What runs the new units, as an action name every interface renders in its own words."""
    actions: dict[str, Literal["resume", "retry", "start", "approve"]] = {
        JobStatus.PAUSED: "resume", JobStatus.FAILED: "retry", JobStatus.CREATED: "start", JobStatus.TESTING: "approve"}
    return actions.get(status)


def _resume_hint(job: JobRecord) -> str:
    hints: dict[str, str] = {
        JobStatus.CREATED: f"use `abp start {job.id}`", JobStatus.TESTING: f"use `abp start {job.id} --approve`",
        JobStatus.FAILED: f"use `abp retry {job.id}`", JobStatus.COMPLETED: "it has finished; nothing to resume",
        JobStatus.CANCELLED: "a cancelled job cannot be resumed"}
    return hints.get(job.status, "")
