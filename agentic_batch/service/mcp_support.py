"""Service read models the MCP server needs beyond the Orchestrator's methods.

Kept apart from orchestrator.py so the MCP layer could land without touching it; each function is
interface-neutral (the REST layer can use them too) and meant to be folded into the Orchestrator.

* `source_catalog()`, `worker_catalog()`, `capabilities_brief()`, `capability_details(kind)`: which
  source kinds and worker kinds exist and what options each takes, read from each kind's Pydantic
  options model, so a new source or worker kind appears without edits (typed: service/models.py).
* `results_page(orch, ...)`: one page of result rows plus the total matching the status filter, so
  a client can page without fetching everything.

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentic_batch.errors import InvalidSpec
from agentic_batch.service.models import (CapabilitiesBrief, CapabilityDetails, ResultsPage, SourceFieldInfo,
                                          SourceKindInfo, WorkerKindInfo, WorkerOptionInfo)
from agentic_batch.sources.kind import SourceSpecBase
from agentic_batch.sources.registry import get_source_kind, source_kinds
from agentic_batch.workers import get_worker_kind, worker_kinds

if TYPE_CHECKING:
    from agentic_batch.service.orchestrator import Orchestrator

#: Fields every source kind has (the rest are the kind's own).
COMMON_SOURCE_FIELDS = tuple(name for name in SourceSpecBase.model_fields if name != "kind")


def source_catalog() -> list[SourceKindInfo]:
    """Every source kind with the fields it uses, from its options model (required: no default)."""
    out = []
    for name in source_kinds():
        kind = get_source_kind(name)
        fields = {field: SourceFieldInfo(required=info.is_required(), description=info.description or "")
                  for field, info in kind.options_model.model_fields.items()}
        fields.update({field: SourceFieldInfo(required=False,
                                              description=SourceSpecBase.model_fields[field].description or "")
                       for field in COMMON_SOURCE_FIELDS})
        out.append(SourceKindInfo(kind=name, items=kind.items, fields=fields))
    return out


def _json_type(prop: dict[str, Any]) -> str:
    """A short type name out of a JSON Schema property ('string', 'integer|null', 'array of string')."""
    if "anyOf" in prop:
        return "|".join(_json_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return "one of " + ", ".join(repr(v) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"array of {_json_type(prop.get('items', {}))}"
    return str(kind)


def options_view(model: type[Any]) -> dict[str, WorkerOptionInfo]:
    """The options of a worker kind, from its Pydantic model: type, default, required, description."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    out: dict[str, WorkerOptionInfo] = {}
    for name, prop in schema.get("properties", {}).items():
        entry: dict[str, Any] = {"type": _json_type(prop), "required": name in required}
        if "default" in prop:
            entry["default"] = prop["default"]
        field = model.model_fields.get(name)
        description = prop.get("description") or (field.description if field is not None else None)
        if description:
            entry["description"] = description
        out[name] = WorkerOptionInfo(**entry)  # only what was given: a missing default is not `null`
    return out


def worker_catalog() -> list[WorkerKindInfo]:
    """Every registered worker kind with its options; a kind whose module cannot load says why."""
    out = []
    for name in worker_kinds():
        try:
            kind = get_worker_kind(name)
        except Exception as exc:  # an optional SDK missing must not hide the other kinds
            out.append(WorkerKindInfo(kind=name, available=False, error=str(exc)))
            continue
        out.append(WorkerKindInfo(kind=name, available=True, summary=kind.summary,
                                  prompt_required=kind.prompt_required, options=options_view(kind.options_model)))
    return out


def _option_names(options: dict[str, WorkerOptionInfo]) -> str:
    """`command*, retry_exit_codes, cwd`: required options starred, in the model's order."""
    return ", ".join(name + ("*" if spec.required else "") for name, spec in options.items())


def capabilities_brief() -> CapabilitiesBrief:
    """One line per source kind and per worker kind: what an assistant needs to pick one, in a few
    hundred characters of its context. `capability_details(kind)` has a kind's full option docs."""
    sources = {}
    for entry in source_catalog():
        fields = entry.fields
        required = [n for n, f in fields.items() if f.required]
        optional = [n for n, f in fields.items() if not f.required and n not in COMMON_SOURCE_FIELDS]
        line = "needs " + ", ".join(required) + (f" (optional: {', '.join(optional)})" if optional else "")
        sources[entry.kind] = f"{line}; {entry.items}"
    workers = {}
    for worker in worker_catalog():
        if not worker.available:
            workers[worker.kind] = f"unavailable: {worker.error}"
            continue
        workers[worker.kind] = f"{worker.summary}; options: {_option_names(worker.options or {})}"
    return CapabilitiesBrief(sources=sources, source_fields_for_all=", ".join(COMMON_SOURCE_FIELDS), workers=workers,
                             legend="* = required",
                             details="list_sources(kind=...) gives one kind's fields or options in full")


def capability_details(kind: str) -> CapabilityDetails:
    """The full entry of one source kind or worker kind (fields/options with types, defaults, docs)."""
    sources = {e.kind: e for e in source_catalog()}
    workers = {e.kind: e for e in worker_catalog()}
    source, worker = sources.get(kind), workers.get(kind)  # `python` is both
    if source is not None and worker is not None:
        return CapabilityDetails(source=source, worker=worker)
    if source is not None:
        return CapabilityDetails(source=source)  # only the fields given appear in the answer
    if worker is not None:
        return CapabilityDetails(worker=worker)
    raise InvalidSpec(f"unknown kind {kind!r}",
                      hint=f"sources: {', '.join(sources)}; workers: {', '.join(workers)}")


def results_page(orch: Orchestrator, ref: str | int, status: str | None = None, limit: int = 20,
                 offset: int = 0) -> ResultsPage:
    """Rows `offset`..`offset+limit` (unit order) and how many rows match the filter in all."""
    rows = orch.results(ref, status=status, limit=limit, offset=offset)  # validates ref and filter
    job_status = orch.status(ref)
    if status:
        wanted = {s.strip().lower() for s in status.split(",") if s.strip()}
        total = sum(int(getattr(job_status, s, 0)) for s in wanted)
    else:
        total = job_status.total
    next_offset = offset + len(rows) if offset + len(rows) < total else None
    return ResultsPage(job_id=job_status.id, job_status=job_status.status, total=total, offset=offset,
                       returned=len(rows), next_offset=next_offset, rows=rows)
