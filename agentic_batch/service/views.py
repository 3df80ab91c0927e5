"""Read models: job status (counts, progress, rate, ETA, cost, executor) and unit detail.

Everything is derived on read from unit statuses and the job's working clock; nothing here is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agentic_batch.config import Settings
from agentic_batch.service import readout
from agentic_batch.service.models import (BatchesView, EventView, ExecutorView, JobSummary, JobView, LogLine, UnitView)
from agentic_batch.service.readout import Progress, ReadStore
from agentic_batch.store.records import EventRecord, JobRecord, LogRecord, UnitRecord

if TYPE_CHECKING:
    from agentic_batch.store import Store

__all__ = ["RATE_WINDOW_S", "Progress", "batches_view", "event_rows", "executor_view", "job_status", "job_summary",
           "log_rows", "unit_view"]

#: The window of the all-jobs throughput on the dashboard (`stats`).
RATE_WINDOW_S = 60.0


def executor_view(store: ReadStore, settings: Settings, job_id: int) -> ExecutorView:
    """The job's executors (`readout.executor_fields`)."""
    return ExecutorView.model_validate(readout.executor_fields(store, settings, job_id))


def job_status(store: ReadStore, settings: Settings, job: JobRecord) -> JobView:
    """Everything about one job: the summary plus cost projection, options and executors."""
    return JobView.model_validate(readout.status_fields(store, settings, job))


def batches_view(store: ReadStore, job: JobRecord, now: float) -> BatchesView:
    """A batch job's provider batches in flight: status, counts, age (the store's rows, no provider call)."""
    return BatchesView.model_validate(readout.batches_fields(store, job, now))


def job_summary(store: ReadStore, job: JobRecord, now: float | None = None) -> JobSummary:
    """The cheap per-row view for lists: counts, progress, rate, elapsed, cost; no executor probing."""
    return JobSummary.model_validate(readout.summary_fields(store, job, now))


def unit_view(unit: UnitRecord, origin: tuple[int, int] | None = None) -> UnitView:
    """A unit as users see it: named by its number within the job (the global id stays internal).
    `origin` is (job id, number) of the unit a cached unit's result came from."""
    return UnitView.model_validate(readout.unit_fields(unit, origin))


def event_rows(store: ReadStore, events: Sequence[EventRecord], number: int | None = None) -> list[EventView]:
    """Conversation events as users see them: `unit` is the unit's number (None for the job's reduce
    step). `number` is given when every event is one unit's; else the numbers are looked up at once."""
    return [EventView.model_validate(e) for e in readout.event_fields(store, events, number)]


def log_rows(store: Store, records: Sequence[LogRecord]) -> list[LogLine]:
    """Log lines as users see them: the logs table keeps unit ids; a line shows its unit's number."""
    numbers = store.browse.unit_numbers(r.unit_id for r in records if r.unit_id is not None)
    return [LogLine(id=r.id, ts=r.ts, level=r.level, message=r.message,
                    unit=numbers.get(r.unit_id) if r.unit_id is not None else None,
                    executor_id=r.executor_id, extra=r.extra) for r in records]
