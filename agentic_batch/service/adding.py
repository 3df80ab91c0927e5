"""Adding items to a job that exists (`abp add`, `POST /api/jobs/{job}/units`, MCP `add_units`).

The items are checked whole before any is stored: each must be a JSON object with the job's key
field, and must render the job's prompt (and command argv, verify command) as at create time. A bad
item is one error naming it (`item 3`, `line 7 of new.jsonl`) and nothing is added. The good ones are
then inserted in one write transaction, keyed and deduplicated exactly as `abp sync` does (a key the
job has, or one given twice, is skipped), so adding the same file twice adds nothing the second time.

A RUNNING job's executors are woken at once (a notification on PostgreSQL; the SQLite poll is a
second) and an executor that was finishing sees the new units: its final status is written only while
no unit is PENDING (`engine.finish`), so it works on. A COMPLETED job runs the new units only when the
caller says so (`start`); otherwise it becomes PAUSED ("new items"), as after `abp sync`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentic_batch.errors import AbpError, IllegalState, InvalidSpec, SourceError, field_ref
from agentic_batch.service import control
from agentic_batch.service.models import AddedUnits
from agentic_batch.states import JobStatus
from agentic_batch.store import NewUnit

if TYPE_CHECKING:  # the source readers are imported where items are read: `abp list` builds this mixin too
    from agentic_batch.config import Settings
    from agentic_batch.sources.kind import RawItem
    from agentic_batch.store import JobRecord, Store
    from agentic_batch.workers.base import WorkerKind

#: Items one MCP call may carry inline (more: write them to a file and give its path).
MAX_INLINE_ITEMS = 1000
#: Statuses a job may take new items in (a CANCELLED job is over: create a new one).
ADDABLE = (JobStatus.CREATED, JobStatus.TESTING, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.COMPLETED,
           JobStatus.FAILED)
#: Statuses `start` turns RUNNING after the add (a CREATED job starts test first: `abp start`).
STARTABLE = (JobStatus.COMPLETED, JobStatus.PAUSED, JobStatus.FAILED, JobStatus.RUNNING)
_INSERT_BATCH = 5000
#: Items per call of a worker's create-time check.
_CHECK_BATCH = 1000
#: How the create-time checks name their sample item ("(item #0, key 'x')").
_SAMPLE_ITEM = re.compile(r"item #0\b")


# -- where items come from: every interface turns its input into (where, payload) pairs ------------


def inline_items(values: Sequence[Any]) -> Iterator[RawItem]:
    """Items given as values (REST JSON array, MCP `items`, CLI `--item`): `item N`, counted from 1."""
    for number, value in enumerate(values, 1):
        yield f"item {number}", value


def jsonl_text_items(text: str, name: str) -> Iterator[RawItem]:
    """One item per non-blank line of `text` (a request body, stdin), named `line N of NAME`."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InvalidSpec(f"line {number} of {name} is not JSON: {exc}",
                              hint="each line must hold one JSON object") from None
        yield f"line {number} of {name}", value


def file_items(path: str, fmt: str | None = None) -> Iterator[RawItem]:
    """Items of a JSONL file or a JSON array file, streamed by the source readers (their errors name
    the line). `fmt` "json" or "jsonl"; None: a file whose first character is `[` is a JSON array."""
    if fmt is None:
        fmt = "json" if _first_char(path) == "[" else "jsonl"
    from agentic_batch.sources.registry import get_source_kind

    kind = get_source_kind(fmt)
    options = kind.options_model.model_validate({"path": str(Path(path).expanduser().absolute())})
    yield from kind.iterate(options, Path.cwd())


def _first_char(path: str) -> str:
    try:
        with open(Path(path).expanduser(), encoding="utf-8-sig") as handle:
            while chunk := handle.read(4096):
                if stripped := chunk.lstrip():
                    return stripped[0]
    except (OSError, UnicodeDecodeError):
        pass  # the reader says what is wrong with the file, in its words
    return ""


# -- checking and inserting -------------------------------------------------------------------------


def prepare_units(job: JobRecord, items: Iterable[RawItem], first_seq: int) -> list[NewUnit]:
    """Every item checked as create checks the first ones, keyed as the job keys its source's items.
    Raises on the first bad item, naming it; returns the units to insert."""
    from agentic_batch.workers import get_worker_kind

    from agentic_batch.service.creation import _Cleaned
    from agentic_batch.sources.base import item_key, item_priority
    from agentic_batch.sources.registry import SourceSpec, get_source_kind

    source = SourceSpec.model_validate(job.source)
    natural = get_source_kind(source.kind).natural_key if not source.key else None
    kind = get_worker_kind(job.worker)
    options = kind.parse_options(job.worker_options)
    cleaned = _Cleaned()
    units: list[NewUnit] = []
    wheres: list[str] = []
    prompts: list[str | None] = []
    for where, payload in items:
        if not isinstance(payload, dict):
            raise InvalidSpec(f"{where} is {_json_kind(payload)}, not a JSON object",
                              hint="each item is one object of fields: {\"path\": \"a.py\"}")
        if natural is not None and natural not in payload:
            raise InvalidSpec(f"{where} has no field {natural!r}: job {job.id}'s items are keyed by it",
                              hint=f"give every item a {natural!r} field")
        try:
            key = item_key(source, where, payload)
            priority = item_priority(source, where, payload)
        except SourceError as exc:
            raise InvalidSpec(exc.raw_message, hint=_job_words(exc.raw_hint, job)) from None
        prompts.append(_render_prompt(job, where, payload, key, len(units)))
        wheres.append(where)
        units.append(cleaned.unit(first_seq + len(units), key, payload, priority))
    if not units:
        raise InvalidSpec("no items to add", hint="give at least one JSON object")
    for start in range(0, len(units), _CHECK_BATCH):
        chunk = slice(start, start + _CHECK_BATCH)
        _check_items(job, kind, options, [u.payload for u in units[chunk]], prompts[chunk], wheres[chunk])
    return units


def _render_prompt(job: JobRecord, where: str, payload: dict[str, Any], key: str, index: int) -> str | None:
    """The job's prompt for this item (it must render, as at create time)."""
    from agentic_batch.prompts import render

    if not job.prompt_template:
        return None
    try:
        return render(job.prompt_template, payload, unit={"id": 0, "key": key, "seq": index, "attempt": 1},
                      job={"id": job.id, "name": job.name})
    except AbpError as exc:
        raise InvalidSpec(f"{where}: {exc.raw_message}", hint=exc.raw_hint) from None


def _check_items(job: JobRecord, kind: WorkerKind[Any], options: Any, payloads: list[dict[str, Any]],
                 prompts: list[str | None], wheres: list[str]) -> None:
    """The worker's create-time check (the command's argv, an MCP tool's input schema) and the verify
    command, over a batch of items at once (the MCP check starts the server once per batch). When the
    batch fails, the first bad item is found by halving and checked alone, so the error names it."""
    def check(some: list[dict[str, Any]], their_prompts: list[str | None]) -> None:
        if kind.sample_check is not None:
            kind.sample_check(options, some, their_prompts, Path(job.workdir))
        if job.isolated and job.verify:
            from agentic_batch.isolation.verify import check_verify

            check_verify(job.verify, some)

    try:
        check(payloads, prompts)
        return
    except AbpError as exc:
        failed = exc
    passes, fails = 0, len(payloads)  # payloads[:passes] pass the check, payloads[:fails] do not
    while fails - passes > 1:
        middle = (passes + fails) // 2
        try:
            check(payloads[:middle], prompts[:middle])
            passes = middle
        except AbpError:
            fails = middle
    index = fails - 1
    try:
        check([payloads[index]], [prompts[index]])
    except AbpError as exc:
        failed = exc  # alone, the checks call it "item #0": it is this item
        message = _SAMPLE_ITEM.sub(lambda _: wheres[index], failed.raw_message, count=1)
        raise InvalidSpec(message, hint=failed.raw_hint) from None
    raise InvalidSpec(failed.raw_message, hint=failed.raw_hint) from None


def insert_all(store: Store, job_id: int, units: list[NewUnit]) -> int:
    """Insert in one write transaction (all or nothing), deduplicating keys; returns how many were new."""
    added = 0
    with store.database.write():
        for start in range(0, len(units), _INSERT_BATCH):
            added += store.units.insert_units(job_id, units[start:start + _INSERT_BATCH])
    return added


def after_add(store: Store, settings: Settings, job: JobRecord, added: int, start: bool) -> bool:
    """Wake or mark the job for its new units; True when it is (again) RUNNING because of `start`.
    A COMPLETED job the caller did not ask to start becomes PAUSED ("new items"), so it shows them
    pending and `abp resume` runs them."""
    if not added:
        return False
    store.changes.notify(job.id, "units")  # executors waiting on PostgreSQL wake now
    store.logs.append_logs([{"job_id": job.id, "level": "info", "message": f"{added} unit(s) added"}])
    if job.status == JobStatus.RUNNING:
        control.spawn(store, settings, job)  # its executor may have just left: make sure one works on it
        return False
    if job.status == JobStatus.COMPLETED and not start:
        store.jobs.update_job(job.id, expect=[JobStatus.COMPLETED], status=JobStatus.PAUSED,
                              pause_reason="new items", finished_at=None)
    return start and job.status in STARTABLE


def check_addable(job: JobRecord, start: bool) -> None:
    """Before anything is read: the job takes items, and `start` means something for it."""
    if job.status not in ADDABLE:
        raise IllegalState(f"cannot add units to job {job.id}: it is {job.status}",
                           hint="create a new job for these items")
    if start and job.status not in STARTABLE:
        raise IllegalState(f"{field_ref('start')} applies to a COMPLETED, PAUSED or FAILED job; job {job.id} is "
                           f"{job.status}", hint=f"add without it, then `abp start {job.id}`"
                           if job.status == JobStatus.CREATED else "add without it")


def added_result(job_id: int, added: int, given: int, status: str, started: bool,
                 next_action: Any) -> AddedUnits:
    return AddedUnits(job_id=job_id, added=added, duplicates=given - added, status=JobStatus(status),
                      started=started, next=None if started or not added else next_action)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _job_words(hint: str | None, job: JobRecord) -> str | None:
    """A key error's hint speaks of the source spec; here the key field is the job's, fixed at create."""
    if hint and "source.key" in hint:
        from agentic_batch.sources.registry import SourceSpec

        return f"job {job.id} keys its items by {SourceSpec.model_validate(job.source).key!r}: every item needs it"
    return hint


class AddMixin:
    """`Orchestrator.add`; needs `store`, `settings`, `job()` and `_run()` from it."""

    store: Store
    settings: Settings

    if TYPE_CHECKING:
        from agentic_batch.service.models import JobView

        def job(self, ref: str | int) -> JobRecord: ...
        def _run(self, job: JobRecord, expect: list[str], executors: int = 1) -> JobView: ...

    def add(self, ref: str | int, items: Iterable[RawItem], start: bool = False) -> AddedUnits:
        """Add items to the job (all checked first; all or none stored). `start`: a COMPLETED, PAUSED or
        FAILED job runs again at once; without it a COMPLETED job becomes PAUSED with the new units."""
        from agentic_batch.service.orchestrator import _sync_next

        job = self.job(ref)
        check_addable(job, start)
        units = prepare_units(job, items, self.store.units.max_seq(job.id) + 1)
        added = insert_all(self.store, job.id, units)
        job = self.job(job.id)  # an executor may have ended the job meanwhile: act on what it is now
        started = after_add(self.store, self.settings, job, added, start)
        if started and job.status != JobStatus.RUNNING:
            self._run(job, expect=[job.status])
        status = self.job(job.id).status
        return added_result(job.id, added, len(units), status, started, _sync_next(status))
