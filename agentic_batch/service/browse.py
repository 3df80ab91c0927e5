"""Browsing and fine-grained steering: the read models and per-unit actions the dashboard, the REST
API and MCP need beyond the CLI's (a mixin of `Orchestrator`, so every interface shares them).

Why a separate module: the CLI reads a job at a time; a browser pages through 100,000 units, sorts
them by cost, charts throughput, and polls for changes every second. Everything here is a bounded,
indexed read (see `agentic_batch.store.browse_queries`), and every argument is validated here so a
bad page size or sort key is an `InvalidSpec` (HTTP 422), never a database error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agentic_batch.errors import IllegalState, InvalidSpec
from agentic_batch.service import control
from agentic_batch.service.models import (JobRow, JobsPage, JobView, LogsPage, RunningJobRow, Stats, TimePoint,
                                          Timeseries, UnitAndJob, UnitFeed, UnitRow, UnitsPage)
from agentic_batch.service.readout import check_cursor, find_unit, parse_statuses
from agentic_batch.service.views import RATE_WINDOW_S, job_status, job_summary, log_rows, unit_view
from agentic_batch.store import LOG_LEVELS, UNIT_STATUSES
from agentic_batch.store.browse_queries import UNIT_SORTS
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.store import JobRecord, Store, UnitRecord

MAX_PAGE = 1000
JOB_STATUSES = [s.value for s in JobStatus if s != JobStatus.CREATING]
_NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class BrowseMixin:
    """Needs `store`, `settings`, `job()`, `status()` and `_run()` from `Orchestrator`."""

    store: Store
    settings: Settings

    if TYPE_CHECKING:
        def job(self, ref: str | int) -> JobRecord: ...
        def status(self, ref: str | int) -> JobView: ...
        def _run(self, job: JobRecord, expect: list[str]) -> JobView: ...

    # -- jobs -----------------------------------------------------------------------------------

    def jobs_page(self, status: str | None = None, search: str | None = None, limit: int = 50,
                  offset: int = 0) -> JobsPage:
        """Jobs newest first with progress, rate and ETA: one page, and how many match in all."""
        check_page(limit, offset)
        statuses = parse_statuses(status, JOB_STATUSES, "job")
        search = (search or "").strip() or None
        records = self.store.jobs.list_jobs(statuses, search, limit, offset)
        return JobsPage(items=[self._job_row(j) for j in records], total=self.store.jobs.count_jobs(statuses, search),
                        limit=limit, offset=offset)

    def _job_row(self, job: JobRecord) -> RunningJobRow | JobRow:
        """A running job gets the full status (executor state); others the cheap summary. Both carry the
        same words (`Progress`): counts, done, progress, rate, ETA, elapsed."""
        if job.status == JobStatus.RUNNING.value:
            full = job_status(self.store, self.settings, job)
            return RunningJobRow(**full.model_dump(exclude={"executor"}), executor_state=full.executor.state)
        return JobRow(**job_summary(self.store, job).model_dump())

    def stats(self) -> Stats:
        """Totals across every job: jobs and units per status, cost, tokens, overall rate."""
        counts = self.store.browse.global_counts()
        jobs = {JobStatus(s): counts["jobs"].get(s, 0) for s in JOB_STATUSES}
        units = {UnitStatus(s): counts["units"].get(s, 0) for s in UNIT_STATUSES}
        recent = self.store.browse.finished_since_all(time.time() - RATE_WINDOW_S)
        return Stats(jobs=jobs, jobs_total=sum(jobs.values()), units=units, units_total=sum(units.values()),
                     cost_usd=round(counts["cost_usd"], 6), tokens_in=counts["tokens_in"],
                     tokens_out=counts["tokens_out"], rate=round(recent / RATE_WINDOW_S, 4))

    def timeseries(self, ref: str | int, buckets: int = 60) -> Timeseries:
        """Units finished and cost spent per time bucket since the job started (for charts)."""
        if not 1 <= buckets <= 1000:
            raise InvalidSpec("buckets must be between 1 and 1000")
        job = self.job(ref)
        if job.started_at is None:
            return Timeseries(job_id=job.id, start=None, end=None, width=None, points=[])
        start = job.started_at
        end = job.finished_at or time.time()
        span = max(end - start, 1.0)
        width = next((w for w in _NICE_WIDTHS if w >= span / buckets), _NICE_WIDTHS[-1])
        count = int(span // width) + 1
        points = [TimePoint(t=start + i * width) for i in range(count)]
        # Units finished before the start (the test unit) count in the first bucket.
        for row in self.store.browse.finished_buckets(job.id, job.created_at, start, width):
            index = min(max(row["bucket"], 0), count - 1)
            point = points[index]
            status = row["status"]
            if status == UnitStatus.COMPLETED:
                point.completed += row["n"]
            elif status == UnitStatus.FAILED:
                point.failed += row["n"]
            elif status == UnitStatus.CANCELLED:
                point.cancelled += row["n"]
            point.cost_usd += row["cost"]
            point.tokens += row["tokens"]
        total = 0.0
        for point in points:
            point.cost_usd = round(point.cost_usd, 6)
            total += point.cost_usd
            point.cost_total = round(total, 6)
        return Timeseries(job_id=job.id, start=start, end=end, width=width, points=points)

    # -- units ----------------------------------------------------------------------------------

    def units_page(self, ref: str | int, status: str | None = None, search: str | None = None,
                   sort: str = "number", order: str = "asc", limit: int = 50, offset: int = 0,
                   key: str | None = None) -> UnitsPage:
        """One page of a job's units: filter by status, search key/output/error, sort, page."""
        check_page(limit, offset)
        if sort not in UNIT_SORTS:
            raise InvalidSpec(f"unknown sort {sort!r}", hint=f"use one of {', '.join(UNIT_SORTS)}")
        if order not in ("asc", "desc"):
            raise InvalidSpec(f"unknown order {order!r}", hint="use asc or desc")
        job = self.job(ref)
        statuses = parse_statuses(status, list(UNIT_STATUSES), "unit")
        items, total = self.store.browse.browse_units(job.id, statuses=statuses, search=(search or "").strip() or None,
                                                      key=key, sort=sort, descending=order == "desc", limit=limit,
                                                      offset=offset)
        return UnitsPage(job_id=job.id, items=[UnitRow.model_validate(i) for i in items], total=total, limit=limit,
                         offset=offset, sort=sort, order="desc" if order == "desc" else "asc")

    def retry_unit(self, ref: str | int, unit_ref: str | int) -> UnitAndJob:
        """A FAILED or CANCELLED unit back to PENDING with fresh retries, and the job running again.

        A PAUSED job stays paused (the unit runs on resume); a finished job runs again for it.
        """
        job = self.job(ref)
        unit = self._unit_record(job, unit_ref)
        if job.status in (JobStatus.CREATED.value, JobStatus.TESTING.value):
            raise IllegalState(f"cannot retry a unit of job {job.id}: it is {job.status}",
                               hint="start the job first")
        if unit.status not in (UnitStatus.FAILED, UnitStatus.CANCELLED):
            raise IllegalState(f"cannot retry unit {unit.number}: it is {unit.status}",
                               hint="only failed or cancelled units can be retried")
        if not self.store.units.set_units_status(job.id, [unit.status], UnitStatus.PENDING, unit_ids=[unit.id],
                                                 reset=True):
            raise IllegalState(f"unit {unit.number} changed state meanwhile; try again")
        self.store.logs.append_logs([{"job_id": job.id, "unit_id": unit.id, "level": "info",
                                      "message": f"unit {unit.number} queued for retry"}])
        if job.status == JobStatus.RUNNING.value:
            control.spawn(self.store, self.settings, job)
        elif job.status != JobStatus.PAUSED.value:
            self._run(job, expect=[job.status])
        return self._unit_and_job(job, unit.id)

    def cancel_unit(self, ref: str | int, unit_ref: str | int) -> UnitAndJob:
        """A PENDING or RUNNING unit to CANCELLED. A running unit's agent is killed by its executor
        within a second (it checks its units' leases), and results are fenced by status anyway."""
        job = self.job(ref)
        unit = self._unit_record(job, unit_ref)
        if unit.status not in (UnitStatus.PENDING, UnitStatus.RUNNING):
            raise IllegalState(f"cannot cancel unit {unit.number}: it is already {unit.status}")
        if not self.store.units.set_units_status(job.id, [unit.status], UnitStatus.CANCELLED, unit_ids=[unit.id]):
            raise IllegalState(f"unit {unit.number} changed state meanwhile; try again")
        self.store.logs.append_logs([{"job_id": job.id, "unit_id": unit.id, "level": "info",
                                      "message": f"unit {unit.number} cancelled"}])
        return self._unit_and_job(job, unit.id)

    def _unit_record(self, job: JobRecord, unit_ref: str | int) -> UnitRecord:
        """A unit by reference: its number in the job, or `key:KEY` (`readout.find_unit`)."""
        return find_unit(self.store, job, unit_ref)

    def _unit_and_job(self, job: JobRecord, unit_id: int) -> UnitAndJob:
        record = self.store.units.get_unit(unit_id)
        assert record is not None
        return UnitAndJob(unit=unit_view(record), job=self.status(job.id))

    # -- live views -----------------------------------------------------------------------------

    def unit_feed(self, ref: str | int, since: float) -> UnitFeed:
        """What a live view polls: the running units and the units that finished since `since`."""
        job = self.job(ref)
        return UnitFeed(running=[UnitRow.model_validate(u) for u in self.store.browse.running_unit_states(job.id)],
                        finished=[UnitRow.model_validate(u)
                                  for u in self.store.browse.finished_unit_states(job.id, since)])

    def unit_states(self, ref: str | int, numbers: list[int]) -> list[UnitRow]:
        return [UnitRow.model_validate(u) for u in self.store.browse.unit_states(self.job(ref).id, numbers[:MAX_PAGE])]

    def last_event_id(self, ref: str | int, unit_ref: str | int | None = None) -> int:
        job = self.job(ref)
        unit_id = self._unit_record(job, unit_ref).id if unit_ref is not None else None
        return self.store.browse.last_event_id(job.id, unit_id)

    def logs_page(self, ref: str | int, level: str = "info", unit: str | int | None = None, text: str | None = None,
                  before: int | None = None, limit: int = 100) -> LogsPage:
        """Newest logs first; pass `next_before` back as `before` for the older page."""
        check_page(limit, 0)
        check_cursor("before", before)
        if level not in LOG_LEVELS:
            raise InvalidSpec(f"unknown log level {level!r}", hint=f"use one of {', '.join(LOG_LEVELS)}")
        job = self.job(ref)
        unit_id = self._unit_record(job, unit).id if unit is not None else None
        records = self.store.browse.browse_logs(job.id, min_level=level, unit_id=unit_id,
                                                text=(text or "").strip() or None, before=before, limit=limit)
        items = log_rows(self.store, records)
        return LogsPage(job_id=job.id, items=items, next_before=items[-1].id if len(items) == limit else None)


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidSpec(f"page size {limit} is out of range", hint=f"use 1 to {MAX_PAGE}")
    check_cursor("offset", offset)
