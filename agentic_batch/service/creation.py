"""Creating a job: validate everything first, then stream the source into units in bulk.

Nothing about a bad job reaches the store: the spec, the worker options, the template (compiled and
rendered against the first items) are all checked before the job row exists. The units are then
inserted in batches under a hidden CREATING status, so a source that turns out malformed at row
80,000 (or a Ctrl-C) deletes the half-made job instead of leaving it behind.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from agentic_batch.batchapi.registry import batch_kinds
from agentic_batch.engine.procs import hostname, process_alive
from agentic_batch.engine.structured import check_schema
from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.isolation import resolve_base
from agentic_batch.jsontext import chunk_encoder
from agentic_batch.isolation.verify import check_verify
from agentic_batch.prompts import compile_template, synthesize, validate
from agentic_batch.sources import Item, describe_source, resolve_spec
from agentic_batch.sources.base import iter_keyed
from agentic_batch.service.models import CreatedJob
from agentic_batch.spec import Isolate, JobSpec, JobStatus, SourceSpec
from agentic_batch.store import NewUnit, Store
from agentic_batch.store.storable import (
    _ESCAPED_UNSTORABLE,
    column_json,
    storable_payload,
    storable_text,
    unstorable_count,
)
from agentic_batch.workers import get_worker_kind

BATCH = 20000
#: `json.dumps`'s C encoder (`column_json`), called inline per item.
_COLUMN_CHUNKS = chunk_encoder()
PREVIEW_ITEMS = 3
REDUCE_SAMPLE = {"results_path": "/path/to/results.jsonl", "total": 10, "completed": 10, "failed": 0,
                 "job_name": "job"}


def _resolve_template(spec: JobSpec, first_payload: dict[str, Any] | None,
                      prompt_required: bool) -> tuple[str | None, bool]:
    if spec.prompt is not None:
        if not spec.prompt.strip():
            raise InvalidSpec("the prompt template is empty")
        return spec.prompt, False
    if spec.intent is not None:
        if not spec.intent.strip():
            raise InvalidSpec("the intent is empty")
        fields = list(first_payload or {})
        return synthesize(spec.intent, spec.source.kind, fields), True
    if prompt_required:
        raise InvalidSpec(f"the {spec.worker} worker needs a prompt",
                          hint=f"give {field_ref('prompt')} (a template) or {field_ref('intent')} (plain words)")
    return None, False


#: JobSpec fields stored other than as given (each is passed to insert_job by hand, in its stored form).
_STORED_BY_HAND = frozenset({"source", "prompt", "worker_options", "priority", "workdir"})


def stored_options(spec: JobSpec) -> dict[str, Any]:
    """Every other job option, as given, for the jobs column of the same name: a new option is stored
    by adding its column, not by listing it here."""
    return spec.model_dump(mode="json", exclude=set(_STORED_BY_HAND))


def check_batch_api(worker: str, options: Any) -> None:
    """`batch_api` sends each unit as ONE model request: a worker kind with a batch API, and no tools
    (a tool loop needs a round trip per turn; `--batch-api turns` is not built)."""
    if worker not in batch_kinds():
        raise InvalidSpec(f"{field_ref('batch_api')} works with the {' and '.join(batch_kinds())} worker(s), "
                          f"not {worker}")
    tools = [name for name in ("allow_commands", "mcp_config") if getattr(options, name, None)]
    if tools:
        named = ", ".join(field_ref(f"worker_options.{name}") for name in tools)
        raise InvalidSpec(f"{field_ref('batch_api')} sends one request per unit and cannot run tools: drop "
                          f"{named} or run without {field_ref('batch_api')}")
    if importlib.util.find_spec(worker) is None:  # the batch APIs go through the provider's SDK (its module)
        raise InvalidSpec(f"{field_ref('batch_api')} needs the {worker} SDK, which is not installed",
                          hint=f"pip install 'agentic-batch[{worker}]'")


def cleanup_abandoned(store: Store) -> None:
    """Delete CREATING jobs whose creating process (on this host) died mid-way."""
    for job in store.jobs.stale_creating_jobs(hostname()):
        if not process_alive(job.creator_pid):
            store.jobs.delete_job(job.id)


def create_job(store: Store, spec: JobSpec, cwd: Path) -> CreatedJob:
    kind = get_worker_kind(spec.worker)
    options = kind.parse_options(spec.worker_options)
    if spec.isolate is Isolate.worktree and not kind.isolatable:
        raise InvalidSpec(f"{field_ref('isolate')} worktree does not apply to the {spec.worker} worker: it serves "
                          f"every unit from the job's directory, not from a unit's worktree")
    workdir = Path(spec.workdir).resolve() if spec.workdir else cwd.resolve()
    if not workdir.is_dir():
        raise InvalidSpec(f"working directory {workdir} does not exist")
    source: SourceSpec = resolve_spec(spec.source, workdir)
    items = iter_keyed(source, cwd=workdir)
    head = [Item(*item) for item in itertools.islice(items, PREVIEW_ITEMS)]
    if not head:
        raise InvalidSpec(f"the source has no items ({describe_source(source)})",
                          hint="check the file, query or function")
    template, synthesized = _resolve_template(spec, head[0].payload, kind.prompt_required)
    previews: list[str] = []
    if template is not None:
        compile_template(template)
        previews = validate(template, [i.payload for i in head], keys=[i.key for i in head],
                            unit={"id": 0, "key": head[0].key, "seq": 0, "attempt": 1},
                            job={"id": 0, "name": spec.name})
    if spec.reduce_prompt is not None:
        validate(spec.reduce_prompt, [REDUCE_SAMPLE], what="reduce prompt", unit={}, job={"id": 0, "name": spec.name})
    if spec.output_schema is not None:
        check_schema(spec.output_schema, field_ref("output_schema"))
    if spec.batch_api:
        check_batch_api(spec.worker, options)
    if kind.check is not None:
        kind.check(options, template, workdir)
    if kind.sample_check is not None:
        kind.sample_check(options, [i.payload for i in head], list(previews) or [None] * len(head), workdir)
    isolation: dict[str, Any] = {}
    warnings: list[str] = []
    if spec.isolate is Isolate.worktree:
        base = resolve_base(_repository_dir(source, options, workdir), spec.base)
        if spec.verify is not None:
            check_verify(spec.verify, [i.payload for i in head])
        isolation = {"repo": str(base.repo), "base_commit": base.commit}
        warnings += [w for w in (base.warning(),) if w]

    cleanup_abandoned(store)
    job_id = store.jobs.insert_job(
        **stored_options(spec), status=JobStatus.CREATING.value, source=source.model_dump(mode="json"),
        prompt_template=template, worker_options=options.model_dump(mode="json", exclude_none=True),
        priority=spec.priority.rank, workdir=str(workdir), creator_pid=os.getpid(), creator_host=hostname(),
        **isolation,
    )
    try:
        cleaned = _Cleaned()
        again = ((i.key, i.payload, i.priority) for i in head)
        inserted, seen = _insert_all(store, job_id, itertools.chain(again, items), cleaned, new_job=True)
        if cleaned.items:
            store.logs.append_logs([{"job_id": job_id, "level": "warning", "message": cleaned.message()}])
        if warnings:
            store.logs.append_logs([{"job_id": job_id, "level": "warning", "message": w} for w in warnings])
        store.jobs.update_job(job_id, expect=[JobStatus.CREATING.value], status=JobStatus.CREATED.value,
                              creator_pid=None)
    except BaseException:
        try:
            store.jobs.delete_job(job_id)
        except Exception:  # the store itself is failing (a full disk): the job stays CREATING, which no
            pass           # listing shows, and the next create removes it (cleanup_abandoned)
        raise
    return CreatedJob(job_id=job_id, name=spec.name, units=inserted, duplicates=seen - inserted,
                      source=describe_source(source), prompt_template=template, synthesized=synthesized,
                      previews=previews,
                      same_name_jobs=[j.id for j in store.jobs.find_jobs_by_name(spec.name) if j.id != job_id],
                      warnings=warnings)


def _repository_dir(source: SourceSpec, options: Any, workdir: Path) -> Path:
    """Where an isolated job's repository is: the files' root, else the worker's cwd, else the workdir."""
    root = getattr(source, "root", None) if source.kind == "files" else None  # resolved: set, absolute
    if root:
        return Path(root)
    cwd = getattr(options, "cwd", None)
    if isinstance(cwd, str) and cwd:
        return (workdir / cwd).resolve()
    return workdir


@dataclass
class _Cleaned:
    """Items whose fields held text the store cannot keep (NUL bytes, lone surrogates)."""

    items: int = 0
    chars: int = 0
    keys: list[str] = field(default_factory=list)

    def unit(self, seq: int, key: str, payload: dict[str, Any], priority: int | None) -> NewUnit:
        payload, payload_json, n_payload = storable_payload(payload)
        n_key = unstorable_count(key)
        if n_key:
            key = storable_text(key)
        if n_payload or n_key:
            self.items += 1
            self.chars += n_payload + n_key
            if len(self.keys) < 5:
                self.keys.append(key)
        return NewUnit(seq=seq, key=key, payload=payload, priority=priority or 0, payload_json=payload_json)

    def message(self) -> str:
        more = ", …" if self.items > len(self.keys) else ""
        return (f"{self.items} item(s) held {self.chars} NUL byte(s) or invalid character(s) the store cannot "
                f"keep; each was replaced with U+FFFD (keys: {', '.join(self.keys)}{more})")


def _insert_all(store: Store, job_id: int, items: Iterable[tuple[str, dict[str, Any], int | None]],
                cleaned: _Cleaned, start: int = 0, new_job: bool = False) -> tuple[int, int]:
    """Insert `(key, payload, priority)` items in batches of BATCH, numbering their seq from `start`;
    returns (units inserted, items seen).

    Each item is serialised once, straight into the row the driver binds: its JSON text (`column_json`,
    `json.dumps`'s text) shows whether it holds anything the store cannot keep (an escaped NUL or
    surrogate; `storable_payload` then cleans it), and a key that is ASCII without a NUL (a content
    key always is) needs no cleaning. Anything else takes `_Cleaned.unit`, as does a batch with an
    item that does not serialise (its insert reports that)."""
    inserted = seen = 0
    rows: list[tuple[int, str, int, str]] = []
    payloads: list[dict[str, Any]] = []  # rows' payloads, for a batch that takes the slow insert
    odd: list[NewUnit] = []  # items that did not serialise
    make, join, unclean = _COLUMN_CHUNKS, "".join, _ESCAPED_UNSTORABLE.search
    for seq, (key, payload, priority) in enumerate(items, start):
        try:
            text: str | None = join(make(payload, 0)) if make is not None else column_json(payload)
        except (TypeError, ValueError, RecursionError):
            text = None
        if text is None or unclean(text) is not None or not key.isascii() or "\x00" in key:
            unit = cleaned.unit(seq, key, payload, priority)
            if unit.payload_json is None:
                odd.append(unit)
            else:
                rows.append((seq, unit.key, unit.priority, unit.payload_json))
                payloads.append(unit.payload)
        else:
            rows.append((seq, key, priority or 0, text))
            payloads.append(payload)
        seen += 1
        if len(rows) + len(odd) >= BATCH:
            inserted += _insert_batch(store, job_id, rows, payloads, odd, new_job)
            rows, payloads, odd = [], [], []
    inserted += _insert_batch(store, job_id, rows, payloads, odd, new_job)
    return inserted, seen


def _insert_batch(store: Store, job_id: int, rows: list[tuple[int, str, int, str]], payloads: list[dict[str, Any]],
                  odd: list[NewUnit], new_job: bool) -> int:
    if not odd:  # a job being created has only this create's keys: a repeat across batches is rare
        return store.units.insert_rows(job_id, rows, new_keys=new_job)
    units = [NewUnit(seq=seq, key=key, payload=payload, priority=priority, payload_json=text)
             for (seq, key, priority, text), payload in zip(rows, payloads, strict=True)] + odd
    units.sort(key=lambda u: u.seq)  # the first of a repeated key wins: keep the source's order
    return store.units.insert_units(job_id, units)


def sync_job(store: Store, job_id: int, source_dict: dict[str, Any], workdir: str) -> tuple[int, int]:
    """Re-enumerate a job's source and add only items whose key is new (returns added, existing)."""
    source = SourceSpec.model_validate(source_dict)
    cleaned = _Cleaned()
    added, seen = _insert_all(store, job_id, iter_keyed(source, cwd=Path(workdir)), cleaned,
                              start=store.units.max_seq(job_id) + 1)
    if cleaned.items:
        store.logs.append_logs([{"job_id": job_id, "level": "warning", "message": cleaned.message()}])
    return added, seen - added
