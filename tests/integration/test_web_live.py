"""Server-Sent Events through a real server: read the streams the way a browser does (httpx
streaming), while a real executor works."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)

Message = tuple[str, Any, str | None]  # (event name or "comment", data, SSE id)


def read_stream(web: Web, path: str, until: Callable[[list[Message]], bool], timeout: float = 30,  # noqa: F811
                headers: dict[str, str] | None = None) -> list[Message]:
    """Messages of an SSE stream until `until(messages)` holds; then hang up (as a closed tab does)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    with web.client.stream("GET", path, headers=headers, timeout=httpx.Timeout(timeout, read=10)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data, event_id = None, [], None
        for line in response.iter_lines():
            if line.startswith(":"):
                messages.append(("comment", line, None))
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line == "" and name:
                messages.append((name, json.loads("\n".join(data)), event_id))
                name, data, event_id = None, [], None
            if until(messages) or time.monotonic() > deadline:
                break
    return messages


def named(messages: list[Message], name: str) -> list[Any]:
    return [data for kind, data, _ in messages if kind == name]


def streams_closed(web: Web) -> bool:  # noqa: F811
    return web.app.state.open_streams == 0


def test_job_stream_follows_a_running_job_then_a_unit(web: Web) -> None:  # noqa: F811
    rows = [{"id": i, "name": f"doc{i}", "sleep": 1.5} for i in range(6)]
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "chatty", rows=rows, concurrency=2), status=201)["job_id"]
    web.ok("POST", f"/api/jobs/{job}/start", {"skip_test": True})

    def seen_everything(messages: list[Message]) -> bool:
        statuses = {u["status"] for u in named(messages, "unit")}
        kinds = {e["kind"] for batch in named(messages, "events") for e in batch}
        return ({"RUNNING", "COMPLETED"} <= statuses and {"assistant", "tool_use", "tool_result"} <= kinds
                and any(a["last_event"] for snap in named(messages, "active") for a in snap)
                and len(named(messages, "progress")) >= 2)

    messages = read_stream(web, f"/api/jobs/{job}/stream?after=0", seen_everything)
    assert seen_everything(messages), [m[0] for m in messages]
    progress = named(messages, "progress")
    assert progress[0]["id"] == job and progress[-1]["done"] >= progress[0]["done"]
    assert all(p1 != p2 for p1, p2 in zip(progress, progress[1:], strict=False))  # only changes are sent
    busy = next(a for snap in named(messages, "active") for a in snap if a["last_event"])
    assert busy["key"] in {str(r["id"]) for r in rows} and busy["last_event"]["unit"] == busy["number"]
    event_ids = [e["id"] for batch in named(messages, "events") for e in batch]
    assert event_ids == sorted(set(event_ids))  # in order, no duplicates
    wait_until(lambda: streams_closed(web), 10, "the server to end the stream after the client left")

    wait_status(web.orch, job, {"COMPLETED"})
    unit = web.ok("GET", f"/api/jobs/{job}/units?limit=1")["items"][0]
    own = read_stream(web, f"/api/jobs/{job}/stream?unit={unit['number']}&after=0",
                      lambda m: bool(named(m, "events")) and bool(named(m, "unit")))
    events = [e for batch in named(own, "events") for e in batch]
    assert {e["unit"] for e in events} == {unit["number"]} and events[0]["kind"] == "start"
    assert named(own, "unit")[0]["status"] == "COMPLETED" and not named(own, "progress")
    # A reconnecting browser sends Last-Event-ID: the stream resumes after it.
    resumed = read_stream(web, f"/api/jobs/{job}/stream?unit={unit['number']}&after=0",
                          lambda m: bool(named(m, "events")), headers={"Last-Event-ID": str(events[1]["id"])})
    assert named(resumed, "events")[0][0]["id"] == events[2]["id"]
    wait_until(lambda: streams_closed(web), 10, "streams to close")


def test_job_list_stream_and_keep_alive(web: Web) -> None:  # noqa: F811
    created: list[int] = []

    def create_once_seen(messages: list[Message]) -> bool:
        pages = named(messages, "jobs")
        if pages and not created:  # the list is on screen: now a job appears elsewhere (here, via the API)
            response = httpx.post(f"{web.url}/api/jobs", json=spec(web.workdir, "fail_some", name="late"), timeout=30)
            created.append(response.json()["job_id"])
        return any(page["total"] == 1 for page in pages) and bool(named(messages, "stats"))

    messages = read_stream(web, "/api/stream?status=created", create_once_seen)
    pages = named(messages, "jobs")
    assert pages[0]["total"] == 0 and pages[-1]["items"][0]["id"] == created[0]
    assert named(messages, "stats")[0]["jobs_total"] in (0, 1)

    # Nothing changes on a CREATED job: the stream sends a keep-alive comment (keepalive_s is 1 s here).
    quiet = read_stream(web, f"/api/jobs/{created[0]}/stream?events=0",
                        lambda m: any(kind == "comment" for kind, *_ in m), timeout=15)
    assert [kind for kind, *_ in quiet][:2] == ["progress", "active"] and quiet[-1][1] == ": keep-alive"
    wait_until(lambda: streams_closed(web), 10, "streams to close")


def test_stream_errors_come_before_the_stream(web: Web) -> None:  # noqa: F811
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some"), status=201)["job_id"]
    for path, status in [("/api/jobs/999/stream", 404), (f"/api/jobs/{job}/stream?unit=424242", 404),
                         (f"/api/jobs/{job}/stream?after=-1", 422), ("/api/stream?status=bogus", 422),
                         ("/api/stream?limit=0", 422)]:
        response = web.get(path)
        assert response.status_code == status and response.json()["error"], (path, response.text)
    assert streams_closed(web)
