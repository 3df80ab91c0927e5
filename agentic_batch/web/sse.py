"""Live updates as Server-Sent Events: one stream per job (progress, unit status changes, new
conversation events, active agents) and one for the job list.

The store is the only channel between executors and this server, so a stream polls it with cheap
indexed reads and sends only what changed since its last poll: on SQLite every `poll_interval`
(default 1 s), on PostgreSQL when a NOTIFY says the job changed (see `changes`). A comment line keeps
idle connections open through proxies; the stream ends when the client goes away or the server
shuts down (`StreamStop`). Each poll runs in the thread pool, as one hop, so the event loop never waits on the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from agentic_batch.refs import MAX_ID, is_ascii_number
from agentic_batch.service import Orchestrator
from agentic_batch.service.browse import MAX_PAGE
from agentic_batch.service.models import ActiveUnit, JobsPage, JobView, Stats, UnitRow, plain
from agentic_batch.web.changes import hub_for
from agentic_batch.web.deps import orchestrator, web_config

router = APIRouter(prefix="/api", tags=["live (SSE)"])
#: How far back a poll looks for finished units (results are written a moment after they finish).
LOOKBACK_S = 5.0
JOB_EVENTS_PER_POLL = 200
UNIT_EVENTS_PER_POLL = 500
STATS_EVERY = 5


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + f"data: {json.dumps(plain(data), default=str, separators=(',', ':'))}\n\n"


class JobWatch:
    """One job stream's memory between polls: what it last sent, so only changes go out."""

    def __init__(self, orch: Orchestrator, job_id: int, unit: int | None, after: int, events: bool) -> None:
        self.orch, self.job_id, self.unit, self.after, self.events = orch, job_id, unit, after, events
        self.progress: JobView | None = None
        self.active: list[ActiveUnit] | None = None
        self.sent: dict[int, tuple[str, int, float]] = {}  # unit number -> (status, attempt, finished_at)
        self.running: set[int] = set()

    def poll(self) -> list[str]:
        """Everything that changed since the last poll, as SSE messages (blocking: run in a thread)."""
        if self.unit is not None:
            return self._unit_changes([self.unit]) + self._new_events()
        out: list[str] = []
        status = self.orch.status(self.job_id)
        if status != self.progress:
            self.progress = status
            out.append(sse("progress", status))
        out += self._feed_changes()
        active = self.orch.active_units(self.job_id)
        if active != self.active:
            self.active = active
            out.append(sse("active", active))
        return out + self._new_events()

    def _changed(self, row: UnitRow) -> bool:
        mark = (str(row.status), row.attempt, row.finished_at or time.time())
        if self.sent.get(row.number, (None, None))[:2] == mark[:2]:
            return False
        self.sent[row.number] = mark
        return True

    def _unit_changes(self, ids: list[int]) -> list[str]:
        return [sse("unit", row) for row in self.orch.unit_states(self.job_id, ids) if self._changed(row)]

    def _feed_changes(self) -> list[str]:
        since = time.time() - LOOKBACK_S
        feed = self.orch.unit_feed(self.job_id, since)
        rows = feed.running + feed.finished
        out = [sse("unit", row) for row in rows if self._changed(row)]
        seen = {row.number for row in rows}
        vanished = [uid for uid in self.running if uid not in seen]  # back to PENDING, or finished long ago
        if vanished:
            out += self._unit_changes(vanished)
        self.running = {row.number for row in feed.running}
        self.sent = {uid: mark for uid, mark in self.sent.items() if mark[2] >= since - 1 or uid in self.running}
        return out

    def _new_events(self) -> list[str]:
        if not self.events:
            return []
        limit = UNIT_EVENTS_PER_POLL if self.unit is not None else JOB_EVENTS_PER_POLL
        batch = self.orch.events(self.job_id, self.unit, after=self.after, limit=limit)
        if not batch:
            return []
        self.after = batch[-1].id
        out = [sse("events", batch, event_id=self.after)]
        if self.unit is None and len(batch) == limit:  # a job-wide flood: jump to the newest
            newest = self.orch.last_event_id(self.job_id)
            if newest > self.after:
                self.after = newest
                out.append(sse("skipped", {"after": newest}, event_id=newest))
        return out


class JobListWatch:
    """The job list stream's memory: the last page and stats it sent."""

    def __init__(self, orch: Orchestrator, status: str | None, q: str | None, limit: int, offset: int) -> None:
        self.orch, self.status, self.q, self.limit, self.offset = orch, status, q, limit, offset
        self.page: JobsPage | None = None
        self.stats: Stats | None = None
        self.polls = 0

    def poll(self) -> list[str]:
        out = []
        page = self.orch.jobs_page(status=self.status, search=self.q, limit=self.limit, offset=self.offset)
        if page != self.page:
            self.page = page
            out.append(sse("jobs", page))
        if self.polls % STATS_EVERY == 0:  # a scan over every unit: not every poll
            stats = self.orch.stats()
            if stats != self.stats:
                self.stats = stats
                out.append(sse("stats", stats))
        self.polls += 1
        return out


class StreamStop:
    """Ends every live stream when the server shuts down.

    uvicorn stops by waiting for each open response to finish, and a stream never finishes on its
    own: Ctrl-C on `abp serve` with a dashboard tab open waited forever. The server calls `stop()`
    when it is asked to exit (web/server.py); each stream races its wait against this and returns.
    `stop()` may be called from a signal handler or another thread.
    """

    def __init__(self) -> None:
        self.stopped = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def event(self) -> asyncio.Event:
        """The event streams wait on, made in the serving loop on first use."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            if self.stopped:
                self._event.set()
        return self._event

    def stop(self) -> None:
        self.stopped = True
        if self._event is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)


async def _wait_unless_stopped(wait: Awaitable[None], stop: asyncio.Event) -> None:
    """Await `wait`, giving up as soon as the server stops."""
    waiting = asyncio.ensure_future(wait)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        stopping.cancel()
    if waiting.done() and not waiting.cancelled() and (error := waiting.exception()) is not None:
        raise error


async def _stream(request: Request, poll: Callable[[], list[str]], job_id: int | None) -> AsyncIterator[str]:
    config = web_config(request)
    state = request.app.state
    hub = hub_for(state)
    stop = state.stream_stop.event()
    state.open_streams += 1
    try:
        yield "retry: 2000\n\n"
        quiet_since = time.monotonic()
        while not stop.is_set() and not await request.is_disconnected():
            messages = await run_in_threadpool(poll)
            if messages:
                yield "".join(messages)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= config.keepalive_s:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await _wait_unless_stopped(hub.wait(job_id, config.poll_interval, idle=config.keepalive_s), stop)
    finally:
        state.open_streams -= 1


class EventStream(StreamingResponse):
    """The streams' response class, so the OpenAPI document names text/event-stream as their only body."""

    media_type = "text/event-stream"


def _response(request: Request, poll: Callable[[], list[str]], job_id: int | None = None) -> StreamingResponse:
    return StreamingResponse(_stream(request, poll, job_id), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


@router.get("/jobs/{job}/stream", summary="Live updates of a job (SSE)",
            response_class=EventStream, responses={200: {"content": {"text/event-stream": {}}}})
async def job_stream(request: Request, job: str,
                     unit: Annotated[str | None, Query(description="Follow this unit only")] = None,
                     after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Send events with an id "
                                                        "above this (default: only new ones)")] = None,
                     events: Annotated[bool, Query(description="Include conversation events")] = True
                     ) -> StreamingResponse:
    """Messages: `progress` (the job status, when it changes), `unit` (a unit's new status), `active`
    (running units and their latest event), `events` (new conversation events, in id order; the SSE
    id is the last one, so a reconnect resumes there), `skipped` (a flood of job-wide events was
    skipped up to `after`). With `unit`: only that unit's `unit` and `events` messages."""
    orch: Orchestrator = orchestrator(request)
    resume = request.headers.get("last-event-id", "")
    if is_ascii_number(resume):  # a reconnecting browser's last event id (past the store's range: none)
        after = min(int(resume), MAX_ID)

    def prepare() -> JobWatch:
        record = orch.job(job)
        number = orch.unit_view(record.id, unit).number if unit is not None else None
        start = after if after is not None else (0 if number is not None else orch.last_event_id(record.id))
        return JobWatch(orch, record.id, number, start, events)

    watch = await run_in_threadpool(prepare)  # an unknown job or unit is a 404 before the stream starts
    return _response(request, watch.poll, watch.job_id)


@router.get("/stream", summary="Live updates of the job list (SSE)",
            response_class=EventStream, responses={200: {"content": {"text/event-stream": {}}}})
async def jobs_stream(request: Request,
                      status: Annotated[str | None, Query(description="Comma list of job statuses")] = None,
                      q: Annotated[str | None, Query(description="Name contains")] = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 50,
                      offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip")] = 0
                      ) -> StreamingResponse:
    """Messages: `jobs` (the page, as `GET /api/jobs` returns it, when anything in it changes) and
    `stats` (as `GET /api/stats`, checked every few polls)."""
    orch: Orchestrator = orchestrator(request)
    watch = JobListWatch(orch, status, q, limit, offset)
    pending = [await run_in_threadpool(watch.poll)]  # bad filters are a 422 before the stream starts

    def poll() -> list[str]:
        return pending.pop() if pending else watch.poll()

    return _response(request, poll)
