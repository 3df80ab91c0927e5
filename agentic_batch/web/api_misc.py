"""REST: logs, streamed result exports, stats across jobs, and a health check."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import StreamingResponse

from agentic_batch import __version__
from agentic_batch.errors import InvalidSpec
from agentic_batch.refs import MAX_ID
from agentic_batch.service import Orchestrator
from agentic_batch.service.browse import MAX_PAGE
from agentic_batch.service.models import LogsPage, LogsTail, ReadModel, Stats
from agentic_batch.store import LOG_LEVELS, UNIT_STATUSES
from agentic_batch.web.deps import orchestrator
from agentic_batch.web.openapi_doc import one_of, word_list

router = APIRouter(prefix="/api", tags=["results, logs, stats"])
Orch = Annotated[Orchestrator, Depends(orchestrator)]
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
                "jsonl": "application/x-ndjson"}
#: The export's body per format: the rows are the user's data (the item's fields are columns).
EXPORT_SCHEMAS: dict[str, dict[str, Any]] = {"csv": {"type": "string"}, "jsonl": {"type": "string"},
                                             "json": {"type": "array", "items": {"type": "object"}}}
CHUNK_CHARS = 64 * 1024


@router.get("/jobs/{job}/logs", summary="A job's logs")
def job_logs(job: str, orch: Orch,
             level: Annotated[str, Query(description="Minimum level: debug, info, warning, error",
                                         json_schema_extra=one_of(LOG_LEVELS))] = "info",
             unit: Annotated[str | None, Query(description="Only this unit's logs: its number, or "
                                                            "`key:KEY`")] = None,
             q: Annotated[str | None, Query(description="Only messages containing this")] = None,
             before: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Newest-first paging: ids below "
                                                                               "this")] = None,
             after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Oldest-first reading: ids above "
                                                                              "this")] = None,
             limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 100) -> LogsPage | LogsTail:
    """Newest first, paged with `before` (= the previous page's `next_before`); or, with `after`,
    oldest first from that id on (to follow a job like `abp logs --follow`)."""
    if after is None:
        return orch.logs_page(job, level=level, unit=unit, text=q, before=before, limit=limit)
    if not 1 <= limit <= 1000 or after < 0:
        raise InvalidSpec("after must be >= 0 and limit between 1 and 1000")
    items = orch.logs(job, level=level, after=after, limit=limit, unit=unit, text=q)
    return LogsTail(job_id=orch.job(job).id, items=items, next_after=items[-1].id if items else after)


class Health(ReadModel):
    ok: bool
    version: str


def _chunked(parts: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[bytes]:
    """Group the export's small pieces: each chunk is one hop to the thread pool, not each row."""
    buffer: list[str] = []
    length = 0
    for part in parts:
        buffer.append(part)
        length += len(part)
        if length >= size:
            yield "".join(buffer).encode()
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer).encode()


@router.get("/jobs/{job}/results", summary="Export results (streamed)",
            responses={200: {"description": "One row per unit: a JSON array of objects, JSON lines, or CSV.",
                             "content": {t: {"schema": EXPORT_SCHEMAS[f]} for f, t in EXPORT_TYPES.items()}}})
def export_results(job: str, orch: Orch,
                   format: Annotated[str, Query(description="csv, json or jsonl",
                                                json_schema_extra=one_of(EXPORT_TYPES))] = "jsonl",
                   status: Annotated[str | None, Query(description="Only units in these statuses (comma list)",
                                                       json_schema_extra=word_list(UNIT_STATUSES))] = None
                   ) -> StreamingResponse:
    """One row per unit (unit: its number in the job, key, item fields, status, output, error, cost, tokens, attempts),
    streamed in unit order without holding the job in memory, like `abp results`."""
    if format not in EXPORT_TYPES:
        raise InvalidSpec(f"unknown export format {format!r}", hint="use csv, json or jsonl")
    job_id = orch.job(job).id
    parts = orch.export(job, fmt=format, status=status)
    return StreamingResponse(_chunked(parts), media_type=EXPORT_TYPES[format], headers={
        "content-disposition": f'attachment; filename="job-{job_id}-results.{format}"'})


@router.get("/stats", summary="Totals across jobs")
def stats(orch: Orch) -> Stats:
    """Jobs and units per status, total cost and tokens, and the overall rate (units/s, last minute)."""
    return orch.stats()


@router.get("/health", summary="Liveness")
def health() -> Health:
    return Health(ok=True, version=__version__)
