"""Read models: job status (counts, progress, rate, ETA, cost, executor) and unit detail.

Everything is derived on read from unit statuses and the job's working clock; nothing here is stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentic_batch.config import Settings
from agentic_batch.engine.recovery import executor_alive
from agentic_batch.priority import Priority
from agentic_batch.store import JobRecord, Store, UnitRecord
from agentic_batch.textcap import DEFAULT_MAX_OUTPUT_BYTES
from agentic_batch.store.records import EventRecord, LogRecord
from agentic_batch.service.models import (BatchesView, BatchView, EventView, ExecutorInfo, ExecutorView, JobSummary,
                                          JobView, LogLine, ReduceView, UnitSource, UnitView)
from agentic_batch.states import JobStatus, UnitStatus

#: The window of the all-jobs throughput on the dashboard (`stats`).
RATE_WINDOW_S = 60.0
_PRIORITY_NAMES = {p.rank: p.value for p in Priority}


@dataclass(frozen=True, slots=True)
class Progress:
    """The words users see, defined once (README "Words"); every view of a job reads them from here.

    `running`: an agent works on the unit now (the claim keeps it at or below the job's concurrency).
    `done`: completed + failed + cancelled, the units that will not run again unless retried.
    `elapsed`: the job's working time, seconds spent RUNNING (paused and idle time left out).
    `rate`: completed units per second of working time. `eta`: the units left over the pace at
    which units leave the queue (completed or failed), while the job runs.
    """

    status: str
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    elapsed: float

    @classmethod
    def of(cls, job: JobRecord, counts: dict[str, int], now: float) -> Progress:
        return cls(status=job.status, pending=counts[UnitStatus.PENDING], running=counts[UnitStatus.RUNNING],
                   completed=counts[UnitStatus.COMPLETED], failed=counts[UnitStatus.FAILED],
                   cancelled=counts[UnitStatus.CANCELLED],
                   elapsed=job.working_seconds(now))

    @property
    def total(self) -> int:
        return self.pending + self.running + self.completed + self.failed + self.cancelled

    @property
    def done(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 2) if self.total else 0.0

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        left = self.pending + self.running
        pace = (self.completed + self.failed) / self.elapsed if self.elapsed > 0 else 0.0
        return left / pace if self.status == JobStatus.RUNNING and left and pace > 0 else None

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta
        return {"total": self.total, "pending": self.pending, "running": self.running,
                "completed": self.completed, "failed": self.failed, "cancelled": self.cancelled,
                "done": self.done, "progress": self.percent, "rate": round(self.rate, 4),
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "elapsed_seconds": round(self.elapsed, 3)}


def executor_view(store: Store, settings: Settings, job_id: int) -> ExecutorView:
    """The job's executors: `running`, `stopped` (it left cleanly) or `lost` (its process is gone or
    its heartbeat is older than a lease, without it having stopped)."""
    # A test run's owner counts while it runs (a TESTING job shows who tests it), not once it is over.
    records = [r for r in store.executors.list_executors(job_id) if r.state not in ("tested", "test-lost")]
    if not records:
        return ExecutorView(state="not_started", pid=None, host=None, heartbeat_at=None, id=None, executors=[])
    now = time.time()
    listed = []
    for rec in records[:20]:
        alive = executor_alive(rec, settings, now)
        state: Literal["running", "stopped", "lost"] = ("running" if alive else "stopped" if rec.state == "stopped"
                                                        else "lost")
        listed.append(ExecutorInfo(
            id=rec.id, host=rec.host, pid=rec.pid, state=state, started_at=rec.started_at,
            heartbeat_at=rec.heartbeat_at,
            units_done=store.units.owner_counts(rec.id).get(UnitStatus.COMPLETED, 0) if alive else None))
    live = [e for e in listed if e.state == "running"]
    head = live[0] if live else listed[0]
    return ExecutorView(state=head.state, pid=head.pid, host=head.host, heartbeat_at=head.heartbeat_at, id=head.id,
                        executors=live if live else listed[:1])


def job_status(store: Store, settings: Settings, job: JobRecord) -> JobView:
    """Everything about one job: the summary plus cost projection, options and executors."""
    now = time.time()
    row, totals = _summary(store, job, now)
    # Cached units cost nothing: the cost per unit is over the units that ran, projected over those that run.
    total, finished = row.total - row.cached, row.completed + row.failed - row.cached
    per_unit = row.cost_usd / finished if finished else None
    batches = batches_view(store, job, now) if job.batch_api else None
    if per_unit is None and batches is not None and batches.units:  # nothing back yet: the batches' projection
        per_unit = batches.projected_usd / batches.units
    projected = round(per_unit * total, 6) if per_unit is not None else None
    return JobView(
        **row.model_dump(),
        projected_cost_usd=projected,
        budget_usd=job.budget_usd, tokens_in=int(totals["tokens_in"]), tokens_out=int(totals["tokens_out"]),
        concurrency=job.concurrency, max_retries=job.max_retries,
        timeout_s=job.timeout_s, priority=_PRIORITY_NAMES.get(job.priority, job.priority),
        max_output_bytes=job.max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES, cache=bool(job.cache),
        hold_until=job.hold_until if job.hold_until and job.hold_until > now else None,
        test_unit=_test_unit_number(store, job),
        reduce=(ReduceView(status=job.reduce_status, output=job.reduce_output, error=job.reduce_error)
                if job.reduce_prompt else None),
        executor=executor_view(store, settings, job.id),
        batches=batches,
    )


def batches_view(store: Store, job: JobRecord, now: float) -> BatchesView:
    """A batch job's provider batches in flight: status, counts, age (the store's rows, no provider call)."""
    live = store.batches.list_batches(job.id, live_only=True)
    return BatchesView(
        in_flight=len(live), units=sum(r.units for r in live),
        projected_usd=round(sum(r.projected_usd for r in live), 6),
        submitted=store.batches.count_submitted(job.id),
        batches=[BatchView(id=r.id, provider_id=r.provider_id, status=r.provider_status or r.state, units=r.units,
                           counts=dict(r.counts or {}), projected_usd=round(r.projected_usd, 6),
                           age_seconds=round(now - (r.submitted_at or r.created_at), 1)) for r in live[:20]])


def job_summary(store: Store, job: JobRecord, now: float | None = None) -> JobSummary:
    """The cheap per-row view for lists: counts, progress, rate, elapsed, cost; no executor probing."""
    return _summary(store, job, time.time() if now is None else now)[0]


def _summary(store: Store, job: JobRecord, now: float) -> tuple[JobSummary, dict[str, float]]:
    progress = Progress.of(job, store.units.count_units(job.id), now)
    totals = store.units.unit_totals(job.id)
    return JobSummary(id=job.id, job_id=job.id, name=job.name, status=JobStatus(job.status), worker=job.worker,
                      **progress.as_dict(), cached=store.cache.cached_count(job.id),
                      cost_usd=round(totals["cost_usd"], 6), created_at=job.created_at,
                      started_at=job.started_at, finished_at=job.finished_at, error=job.error,
                      pause_reason=job.pause_reason if job.status == JobStatus.PAUSED else None), totals


def unit_view(unit: UnitRecord, origin: tuple[int, int] | None = None) -> UnitView:
    """A unit as users see it: named by its number within the job (the global id stays internal).
    `origin` is (job id, number) of the unit a cached unit's result came from."""
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    return UnitView(number=unit.number, job_id=unit.job_id, key=unit.key,
                    priority=unit.priority, status=UnitStatus(unit.status), attempts=unit.attempt,
                    errors=unit.error_count, payload=unit.payload, prompt=unit.prompt, output=unit.output,
                    data=unit.data, error=unit.error, error_class=unit.error_class,
                    cost_usd=round(unit.cost_usd, 6), tokens_in=unit.tokens_in, tokens_out=unit.tokens_out,
                    turns=unit.turns, session_id=unit.session_id, started_at=unit.started_at,
                    finished_at=unit.finished_at, duration_s=round(duration, 3) if duration is not None else None,
                    not_before=unit.not_before, lease_owner=unit.lease_owner, exit_code=unit.exit_code,
                    stdout=unit.stdout, stderr=unit.stderr,
                    cached_from=UnitSource(job_id=origin[0], unit=origin[1]) if origin else None)


def _test_unit_number(store: Store, job: JobRecord) -> int | None:
    if job.test_unit_id is None:
        return None
    return store.browse.unit_numbers([job.test_unit_id]).get(job.test_unit_id)


def event_rows(store: Store, events: Sequence[EventRecord], number: int | None = None) -> list[EventView]:
    """Conversation events as users see them: `unit` is the unit's number (None for the job's reduce
    step). `number` is given when every event is one unit's; else the numbers are looked up at once."""
    numbers = ({} if number is not None
               else store.browse.unit_numbers(e.unit_id for e in events if e.unit_id is not None))
    return [EventView(id=e.id, unit=number if number is not None or e.unit_id is None else numbers.get(e.unit_id),
                      attempt=e.attempt, seq=e.seq, ts=e.ts, kind=e.kind, data=e.data) for e in events]


def log_rows(store: Store, records: Sequence[LogRecord]) -> list[LogLine]:
    """Log lines as users see them: the logs table keeps unit ids; a line shows its unit's number."""
    numbers = store.browse.unit_numbers(r.unit_id for r in records if r.unit_id is not None)
    return [LogLine(id=r.id, ts=r.ts, level=r.level, message=r.message,
                    unit=numbers.get(r.unit_id) if r.unit_id is not None else None,
                    executor_id=r.executor_id, extra=r.extra) for r in records]
