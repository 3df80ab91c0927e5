"""REST: a job's units (the paged table, one unit, its conversation), adding items as new units,
per-unit retry and cancel, and the job-wide event feed. A unit is named by its number in the job
(1..N), or `key:KEY` when the key has no slash; `GET .../units?key=KEY` finds any key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from agentic_batch.errors import InvalidSpec
from agentic_batch.refs import MAX_ID
from agentic_batch.service import Orchestrator
from agentic_batch.service.browse import MAX_PAGE
from agentic_batch.service.models import AddedUnits, EventsPage, EventView, UnitAndJob, UnitsPage, UnitView
from agentic_batch.store import UNIT_STATUSES
from agentic_batch.store.browse_queries import UNIT_SORTS
from agentic_batch.web.deps import orchestrator
from agentic_batch.web.errors import BadRequest, read_json
from agentic_batch.web.openapi_doc import one_of, word_list

router = APIRouter(prefix="/api", tags=["units"])
Orch = Annotated[Orchestrator, Depends(orchestrator)]
MAX_EVENTS = 2000
After = Annotated[int, Query(ge=0, le=MAX_ID, description="Only events with an id above this")]
EventsLimit = Annotated[int, Query(ge=1, le=MAX_EVENTS, description="Page size")]

#: The body of `POST /api/jobs/{job}/units` in the OpenAPI document: an array of objects, or JSON Lines.
ITEMS_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "minItems": 1, "items": {"type": "object"},
                                     "description": "The items, each a JSON object of fields."}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "One JSON object per line."}}}}}


@router.post("/jobs/{job}/units", summary="Add items as new units", openapi_extra=ITEMS_BODY)
async def add_units(job: str, request: Request,
                    start: Annotated[bool, Query(description="Run a COMPLETED, PAUSED or FAILED job again at "
                                                             "once for the new units.")] = False) -> AddedUnits:
    """Like `abp add`: a JSON array of items, or a JSON Lines body (`Content-Type: application/x-ndjson`).
    Keyed and deduplicated as `sync`; every item is checked against the job's prompt first, and a bad
    one is a 422 naming it (`item 3`, `line 3 of the request body`) with nothing added. A RUNNING
    job's executors pick the new units up at once; a COMPLETED job becomes PAUSED with them unless
    `start`."""
    from agentic_batch.service.adding import inline_items, jsonl_text_items

    orch: Orchestrator = orchestrator(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-ndjson":
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the request body is not UTF-8 text: {exc}") from None
        items = list(jsonl_text_items(text, "the request body"))
    else:
        body = await read_json(request)
        if not isinstance(body, list):
            raise InvalidSpec("the request body must be a JSON array of items (or JSON Lines, with "
                              "Content-Type: application/x-ndjson)")
        items = list(inline_items(body))
    return await run_in_threadpool(orch.add, job, items, start)


@router.get("/jobs/{job}/units", summary="List a job's units")
def list_units(job: str, orch: Orch,
               status: Annotated[str | None, Query(description="Comma list: pending,running,completed,failed,"
                                                                 "cancelled",
                                                     json_schema_extra=word_list(UNIT_STATUSES))] = None,
               q: Annotated[str | None, Query(description="Substring of key, output or error; or a unit "
                                                          "number")] = None,
               key: Annotated[str | None, Query(description="Only the unit with exactly this key")] = None,
               sort: Annotated[str, Query(description="number (source order), key, cost or duration",
                                          json_schema_extra=one_of(UNIT_SORTS))] = "number",
               order: Annotated[str, Query(description="asc or desc", json_schema_extra=one_of(("asc", "desc")))]
               = "asc",
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 50,
               offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip")] = 0) -> UnitsPage:
    """One page of light rows (output and error cut to a preview) and the `total` that match.
    Every sort walks an index, so pages stay fast on jobs of 100,000 units and more."""
    return orch.units_page(job, status=status, search=q, key=key, sort=sort, order=order, limit=limit, offset=offset)


@router.get("/jobs/{job}/units/{unit}", summary="One unit")
def get_unit(job: str, unit: str, orch: Orch) -> UnitView:
    """Payload, rendered prompt, attempts, retries, output, structured data, error, cost, tokens,
    duration. The conversation is at `.../events`."""
    return orch.unit_view(job, unit)


def _events_page(items: list[EventView], after: int, limit: int) -> EventsPage:
    return EventsPage(items=items, next_after=items[-1].id if items else after, more=len(items) == limit)


def _check_events_page(after: int, limit: int) -> None:
    if after < 0:
        raise InvalidSpec("after must be >= 0")
    if not 1 <= limit <= MAX_EVENTS:
        raise InvalidSpec(f"page size {limit} is out of range", hint=f"use 1 to {MAX_EVENTS}")


@router.get("/jobs/{job}/units/{unit}/events", summary="A unit's conversation")
def unit_events(job: str, unit: str, orch: Orch, after: After = 0, limit: EventsLimit = 500) -> EventsPage:
    """Every attempt's events in order; pass `next_after` back as `after` to read on incrementally."""
    _check_events_page(after, limit)
    return _events_page(orch.events(job, unit, after=after, limit=limit), after, limit)


@router.get("/jobs/{job}/events", summary="A job's events")
def job_events(job: str, orch: Orch, after: After = 0, limit: EventsLimit = 500) -> EventsPage:
    _check_events_page(after, limit)
    return _events_page(orch.events(job, after=after, limit=limit), after, limit)


@router.post("/jobs/{job}/units/{unit}/retry", summary="Retry one unit")
def retry_unit(job: str, unit: str, orch: Orch) -> UnitAndJob:
    """A FAILED or CANCELLED unit back to PENDING with fresh retries. A finished job runs again for
    it; a PAUSED job stays paused and runs it on resume."""
    return orch.retry_unit(job, unit)


@router.post("/jobs/{job}/units/{unit}/cancel", summary="Cancel one unit")
def cancel_unit(job: str, unit: str, orch: Orch) -> UnitAndJob:
    """A PENDING or RUNNING unit becomes CANCELLED; a running agent's result is discarded."""
    return orch.cancel_unit(job, unit)
