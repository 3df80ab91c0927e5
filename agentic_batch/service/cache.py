"""The result cache, applied in bulk before an executor starts (start, approve, retry, resume).

Before any unit of a `--cache` job is claimed, its PENDING units are fingerprinted (rendering each
prompt as the engine will) and those whose fingerprint a COMPLETED unit of another job has are
completed from it at no cost. Doing it here, before the executor, rather than inside a worker, means
the online pool and the provider batch path both see only the units left to run, and the count
("N units cached, M to run, projected $X") is known before anything starts.

A retry after a prompt edit re-runs only the completed units whose fingerprint changed: the rest of
the job keeps its answers (`unchanged`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

from agentic_batch.service.models import RunPlan
from agentic_batch.states import UnitStatus
from agentic_batch.store import Fingerprinted, JobRecord, Store, UnitRecord

#: Units fingerprinted, looked up and completed per transaction.
PAGE = 1000


def _pages(records: Iterable[UnitRecord]) -> Iterator[list[UnitRecord]]:
    iterator = iter(records)
    while page := list(itertools.islice(iterator, PAGE)):
        yield page


def apply_cache(store: Store, job: JobRecord, *, new_only: bool = False,
                completed_ids: Sequence[int] = ()) -> int:
    """Fingerprint the job's PENDING units (with `new_only`, those without a fingerprint yet: after a
    prompt edit or a sync) and complete from the cache those another job has answered. Units in
    `completed_ids` (a test unit that ran with the current prompt) get their fingerprint too, so they
    serve later jobs. Returns how many units the cache completed. A job without `--cache`: nothing."""
    if not job.cache:
        return 0
    from agentic_batch.service.fingerprints import JobFingerprint  # renders prompts: Jinja2 only when needed

    fingerprint = JobFingerprint(job)
    cached = 0
    for unit_id in completed_ids:
        unit = store.units.get_unit(unit_id)
        if unit is not None and unit.status == UnitStatus.COMPLETED:
            store.cache.complete_page(job.id, [Fingerprinted(unit.id, *fingerprint.unit(unit))])
    for page in _pages(store.units.iter_units(job.id, [UnitStatus.PENDING], batch_size=PAGE)):
        todo = [u for u in page if not (new_only and u.fingerprint)]
        cached += len(store.cache.complete_page(job.id, [Fingerprinted(u.id, *fingerprint.unit(u)) for u in todo]))
    if cached:
        store.logs.append_logs([{"job_id": job.id, "level": "info",
                                 "message": f"{cached} unit(s) completed from the result cache"}])
    return cached


def requeue_changed(store: Store, job: JobRecord) -> tuple[int, int]:
    """A retry of a `--cache` job: its COMPLETED units whose fingerprint changed since they ran (the
    prompt was edited) go back to PENDING; the others keep their answers. Returns (requeued,
    unchanged). A unit without a fingerprint (it ran before the job knew one) counts as unchanged."""
    if not job.cache:
        return 0, 0
    from agentic_batch.service.fingerprints import JobFingerprint

    fingerprint = JobFingerprint(job)
    requeued = unchanged = 0
    for page in _pages(store.units.iter_units(job.id, [UnitStatus.COMPLETED], batch_size=PAGE)):
        changed: list[tuple[int, str | None]] = []
        for unit in page:
            now, _ = fingerprint.unit(unit)
            if unit.fingerprint is None or now == unit.fingerprint:
                unchanged += 1
            else:
                changed.append((unit.id, now))
        requeued += store.cache.requeue_changed(changed)
    if requeued:
        store.logs.append_logs([{"job_id": job.id, "level": "info",
                                 "message": f"{requeued} completed unit(s) queued again: their prompt changed"}])
    return requeued, unchanged


def run_plan(store: Store, job: JobRecord, cached: int, unchanged: int = 0) -> RunPlan:
    """The counts shown before a run starts, and what the units left may cost: at this job's cost per
    unit that ran, else at what its cached units cost when they ran, else unknown."""
    counts = store.units.count_units(job.id)
    to_run = counts[UnitStatus.PENDING] + counts[UnitStatus.RUNNING]
    ran_cost, ran, copied_cost, copied = store.cache.cost_basis(job.id)
    per_unit = ran_cost / ran if ran else copied_cost / copied if copied else None
    projected = round(per_unit * to_run, 6) if per_unit is not None else None
    return RunPlan(cached=cached, unchanged=unchanged, to_run=to_run, projected_cost_usd=projected)
