"""What a job, a unit and an event look like to users, as plain dicts: derived once, here.

`views` wraps these dicts in the read models (pydantic) every interface returns; the CLI's read
commands (`abp list`, `abp status JOB`, `abp show JOB UNIT`: `cli.quick`) print them as they are,
from the store's direct reads (`store.direct`), without importing pydantic or SQLAlchemy. So each
derivation (progress, rate, ETA, projected cost, executor state, a unit's duration) exists once,
and each dict's keys are its model's fields in the model's order (a model refuses a key it does
not declare; tests/integration/test_cli_direct_reads.py compares the two paths' output).

Everything is derived on read from unit statuses and the job's working clock; nothing here is stored.
The store is any `ReadStore`: the SQLAlchemy `Store`, or `store.direct.DirectReads`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agentic_batch.errors import InvalidSpec, NotFound
from agentic_batch.priority import Priority
from agentic_batch.refs import MAX_ID, is_ascii_number, parse_id, parse_unit_ref
from agentic_batch.states import JobStatus, UnitStatus
from agentic_batch.textcap import DEFAULT_MAX_OUTPUT_BYTES

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.store.records import BatchRecord, EventRecord, ExecutorRecord, JobRecord, UnitRecord

_PRIORITY_NAMES = {p.rank: p.value for p in Priority}


# -- what a view reads: the store's read queries, on either path ------------------------------------


class JobReads(Protocol):
    def get_job(self, job_id: int) -> JobRecord | None: ...
    def find_jobs_by_name(self, name: str) -> list[JobRecord]: ...
    def list_jobs(self, statuses: Iterable[str] | None = None, name_contains: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[JobRecord]: ...


class UnitReads(Protocol):
    def count_units(self, job_id: int) -> dict[str, int]: ...
    def unit_totals(self, job_id: int) -> dict[str, float]: ...
    def owner_counts(self, owner: str) -> dict[str, int]: ...
    def running_units(self, job_id: int, limit: int = 50) -> list[UnitRecord]: ...


class CacheReads(Protocol):
    def cached_count(self, job_id: int) -> int: ...
    def origins(self, unit_ids: Iterable[int]) -> dict[int, tuple[int, int]]: ...


class ExecutorReads(Protocol):
    def list_executors(self, job_id: int, live_only: bool = False) -> list[ExecutorRecord]: ...


class BatchReads(Protocol):
    def list_batches(self, job_id: int, live_only: bool = False, limit: int | None = None) -> list[BatchRecord]: ...
    def count_submitted(self, job_id: int) -> int: ...


class BrowseReads(Protocol):
    def unit_by_number(self, job_id: int, number: int) -> UnitRecord | None: ...
    def unit_by_key(self, job_id: int, key: str) -> UnitRecord | None: ...
    def unit_numbers(self, unit_ids: Iterable[int]) -> dict[int, int]: ...


class EventReads(Protocol):
    def list_events(self, *, job_id: int | None = None, unit_id: int | None = None, after: int = 0,
                    limit: int = 500, attempt: int | None = None, reduce: bool = False) -> list[EventRecord]: ...
    def latest_events(self, unit_ids: Sequence[int]) -> dict[int, EventRecord]: ...


class ReadStore(Protocol):
    """The reads the views make (`Store` has them all; `store.direct.DirectReads` has exactly these)."""

    @property
    def jobs(self) -> JobReads: ...
    @property
    def units(self) -> UnitReads: ...
    @property
    def cache(self) -> CacheReads: ...
    @property
    def executors(self) -> ExecutorReads: ...
    @property
    def batches(self) -> BatchReads: ...
    @property
    def browse(self) -> BrowseReads: ...
    @property
    def events(self) -> EventReads: ...


# -- finding a job and a unit -----------------------------------------------------------------------


def resolve_job(store: ReadStore, ref: str | int) -> JobRecord:
    """A job by id, by name when that name is unique, or `last` for the newest job.

    A number is always an id (ASCII digits in the store's range; anything else numeric-looking is
    not an id, so it cannot overflow a query or resolve `٣` to job 3). A name that several jobs
    share is refused with their ids rather than guessed."""
    text = str(ref).strip()
    if isinstance(ref, int) or is_ascii_number(text):
        job_id = parse_id(ref)
        job = store.jobs.get_job(job_id) if job_id is not None else None
        if job is not None and job.status != JobStatus.CREATING.value:
            return job
    else:
        matches = store.jobs.find_jobs_by_name(text)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(str(j.id) for j in matches)
            raise InvalidSpec(f"job name {text!r} matches jobs {ids}; use an id")
        if text == "last":  # the newest job, unless a job is actually named "last"
            newest = store.jobs.list_jobs(limit=1)
            if newest:
                return newest[0]
    raise NotFound(f"no job {text!r}", hint="see `abp list` for job ids")


def find_unit(store: ReadStore, job: JobRecord, unit_ref: str | int) -> UnitRecord:
    """A unit by reference: a number is always the unit's number within the job (1..N); a key is
    `key:KEY` (or a bare reference that is not a number). Never the global id, never a guess."""
    kind, value = parse_unit_ref(unit_ref)
    unit = None
    if kind == "key":
        unit = store.browse.unit_by_key(job.id, str(value))
    elif value is not None:
        unit = store.browse.unit_by_number(job.id, int(value))
    if unit is None:
        what = f"key {value!r}" if kind == "key" else str(unit_ref).strip()
        raise NotFound(f"job {job.id} has no unit {what}",
                       hint="a unit is its number in the job (1, 2, ...) or key:KEY")
    return unit


def job_rows(store: ReadStore, status: str | None = None, name: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[dict[str, Any]]:
    """`JobSummary`s of the jobs in these states (`running,paused`), newest first."""
    statuses = parse_statuses(status, [s.value for s in JobStatus if s != JobStatus.CREATING], "job")
    check_cursor("offset", offset)
    now = time.time()
    return [summary_fields(store, j, now) for j in store.jobs.list_jobs(statuses, name, limit, offset)]


def check_cursor(name: str, value: int | None) -> None:
    """An offset or an id to page from: 0 up to the store's largest id (a bigger one cannot exist,
    and past 2^63 it would overflow the query)."""
    if value is not None and not 0 <= value <= MAX_ID:
        raise InvalidSpec(f"{name} {value} is out of range", hint=f"use 0 to {MAX_ID}")


def parse_statuses(raw: str | None, allowed: list[str], what: str) -> list[str] | None:
    """`running,paused` -> ["RUNNING", "PAUSED"]; an unknown name is an `InvalidSpec`."""
    if not raw:
        return None
    wanted = [s.strip().upper() for s in raw.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in allowed]
    if unknown:
        raise InvalidSpec(f"unknown {what} status {unknown[0].lower()!r}",
                          hint=f"use one of {', '.join(a.lower() for a in allowed)}")
    return wanted or None


# -- a job --------------------------------------------------------------------------------------------


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


def summary_fields(store: ReadStore, job: JobRecord, now: float | None = None) -> dict[str, Any]:
    """`JobSummary`: the cheap per-row view for lists (counts, progress, rate, elapsed, cost; no executor
    probing)."""
    return _summary(store, job, time.time() if now is None else now)[0]


def _summary(store: ReadStore, job: JobRecord, now: float) -> tuple[dict[str, Any], dict[str, float]]:
    p = Progress.of(job, store.units.count_units(job.id), now).as_dict()
    totals = store.units.unit_totals(job.id)
    return {"id": job.id, "job_id": job.id, "name": job.name, "status": JobStatus(job.status), "worker": job.worker,
            "total": p["total"], "pending": p["pending"], "running": p["running"], "completed": p["completed"],
            "failed": p["failed"], "cancelled": p["cancelled"], "cached": store.cache.cached_count(job.id),
            "done": p["done"], "progress": p["progress"], "rate": p["rate"], "eta_seconds": p["eta_seconds"],
            "elapsed_seconds": p["elapsed_seconds"], "cost_usd": round(totals["cost_usd"], 6),
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "error": job.error, "pause_reason": job.pause_reason if job.status == JobStatus.PAUSED else None}, totals


def status_fields(store: ReadStore, settings: Settings, job: JobRecord) -> dict[str, Any]:
    """`JobView`: everything about one job, the summary plus cost projection, options and executors."""
    now = time.time()
    row, totals = _summary(store, job, now)
    # Cached units cost nothing: the cost per unit is over the units that ran, projected over those that run.
    total, finished = row["total"] - row["cached"], row["completed"] + row["failed"] - row["cached"]
    per_unit = row["cost_usd"] / finished if finished else None
    batches = batches_fields(store, job, now) if job.batch_api else None
    if per_unit is None and batches is not None and batches["units"]:  # nothing back yet: the batches' projection
        per_unit = batches["projected_usd"] / batches["units"]
    projected = round(per_unit * total, 6) if per_unit is not None else None
    return {
        **row,
        "projected_cost_usd": projected,
        "budget_usd": job.budget_usd, "tokens_in": int(totals["tokens_in"]), "tokens_out": int(totals["tokens_out"]),
        "concurrency": job.concurrency, "max_retries": job.max_retries,
        "timeout_s": job.timeout_s, "priority": _PRIORITY_NAMES.get(job.priority, job.priority),
        "max_output_bytes": job.max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES, "cache": bool(job.cache),
        "hold_until": job.hold_until if job.hold_until and job.hold_until > now else None,
        "test_unit": _test_unit_number(store, job),
        "reduce": ({"status": job.reduce_status, "output": job.reduce_output, "error": job.reduce_error}
                   if job.reduce_prompt else None),
        "batches": batches,
        "executor": executor_fields(store, settings, job.id),
    }


def executor_fields(store: ReadStore, settings: Settings, job_id: int) -> dict[str, Any]:
    """`ExecutorView`: the job's executors, `running`, `stopped` (it left cleanly) or `lost` (its process
    is gone or its heartbeat is older than a lease, without it having stopped)."""
    from agentic_batch.engine.recovery import executor_alive

    # A test run's owner counts while it runs (a TESTING job shows who tests it), not once it is over.
    records = [r for r in store.executors.list_executors(job_id) if r.state not in ("tested", "test-lost")]
    if not records:
        return {"state": "not_started", "pid": None, "host": None, "heartbeat_at": None, "id": None, "executors": []}
    now = time.time()
    listed = []
    for rec in records[:20]:
        alive = executor_alive(rec, settings, now)
        state = "running" if alive else "stopped" if rec.state == "stopped" else "lost"
        listed.append({
            "id": rec.id, "host": rec.host, "pid": rec.pid, "state": state, "started_at": rec.started_at,
            "heartbeat_at": rec.heartbeat_at,
            "units_done": store.units.owner_counts(rec.id).get(UnitStatus.COMPLETED, 0) if alive else None})
    live = [e for e in listed if e["state"] == "running"]
    head = live[0] if live else listed[0]
    return {"state": head["state"], "pid": head["pid"], "host": head["host"], "heartbeat_at": head["heartbeat_at"],
            "id": head["id"], "executors": live if live else listed[:1]}


def batches_fields(store: ReadStore, job: JobRecord, now: float) -> dict[str, Any]:
    """`BatchesView`: a batch job's provider batches in flight, status, counts, age (the store's rows, no
    provider call)."""
    live = store.batches.list_batches(job.id, live_only=True)
    return {
        "in_flight": len(live), "units": sum(r.units for r in live),
        "projected_usd": round(sum(r.projected_usd for r in live), 6),
        "submitted": store.batches.count_submitted(job.id),
        "batches": [{"id": r.id, "provider_id": r.provider_id, "status": r.provider_status or r.state,
                     "units": r.units, "counts": dict(r.counts or {}), "projected_usd": round(r.projected_usd, 6),
                     "age_seconds": round(now - (r.submitted_at or r.created_at), 1)} for r in live[:20]]}


def _test_unit_number(store: ReadStore, job: JobRecord) -> int | None:
    if job.test_unit_id is None:
        return None
    return store.browse.unit_numbers([job.test_unit_id]).get(job.test_unit_id)


# -- a unit and its events ------------------------------------------------------------------------


def unit_fields(unit: UnitRecord, origin: tuple[int, int] | None = None) -> dict[str, Any]:
    """`UnitView`: a unit as users see it, named by its number within the job (the global id stays
    internal). `origin` is (job id, number) of the unit a cached unit's result came from."""
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    return {"number": unit.number, "job_id": unit.job_id, "key": unit.key,
            "priority": unit.priority, "status": UnitStatus(unit.status), "attempts": unit.attempt,
            "errors": unit.error_count, "payload": unit.payload, "prompt": unit.prompt, "output": unit.output,
            "data": unit.data, "error": unit.error, "error_class": unit.error_class,
            "cost_usd": round(unit.cost_usd, 6), "tokens_in": unit.tokens_in, "tokens_out": unit.tokens_out,
            "turns": unit.turns, "session_id": unit.session_id, "started_at": unit.started_at,
            "finished_at": unit.finished_at, "duration_s": round(duration, 3) if duration is not None else None,
            "not_before": unit.not_before, "lease_owner": unit.lease_owner, "exit_code": unit.exit_code,
            "stdout": unit.stdout, "stderr": unit.stderr,
            "cached_from": {"job_id": origin[0], "unit": origin[1]} if origin else None}


def unit_view_fields(store: ReadStore, job: JobRecord, unit: UnitRecord) -> dict[str, Any]:
    """`UnitView` of a unit of `job`: a prompt not rendered yet (the unit has not run) is previewed from
    the job's template (Jinja2, imported for it alone)."""
    origin = store.cache.origins([unit.cached_from]).get(unit.cached_from) if unit.cached_from else None
    view = unit_fields(unit, origin)
    if view["prompt"] is None and job.prompt_template:
        from agentic_batch.prompts import render

        try:
            view["prompt"] = render(job.prompt_template, unit.payload,
                                    unit={"id": None, "key": unit.key, "seq": unit.seq, "attempt": 0},
                                    job={"id": job.id, "name": job.name})
        except InvalidSpec:
            pass
    return view


def event_fields(store: ReadStore, events: Sequence[EventRecord], number: int | None = None) -> list[dict[str, Any]]:
    """`EventView`s: conversation events as users see them, `unit` the unit's number (None for the job's
    reduce step). `number` is given when every event is one unit's; else the numbers are looked up at once."""
    numbers = ({} if number is not None
               else store.browse.unit_numbers(e.unit_id for e in events if e.unit_id is not None))
    return [{"id": e.id, "unit": number if number is not None or e.unit_id is None else numbers.get(e.unit_id),
             "attempt": e.attempt, "seq": e.seq, "ts": e.ts, "kind": e.kind, "data": e.data} for e in events]


def active_unit_fields(store: ReadStore, job: JobRecord, limit: int = 20) -> list[dict[str, Any]]:
    """`ActiveUnit`s: units running now, each with its newest event (what the agent is doing)."""
    running = store.units.running_units(job.id, limit)
    latest = store.events.latest_events([u.id for u in running])
    now = time.time()
    return [{"number": u.number, "key": u.key, "attempt": u.attempt,
             "elapsed_s": round(now - u.started_at, 1) if u.started_at else None,
             "last_event": event_fields(store, [latest[u.id]], u.number)[0] if u.id in latest else None}
            for u in running]
