"""References users type, through every interface: ids are ASCII digits in the store's range, every
number has bounds, and a job name several jobs share is refused with their ids.

What the fuzzer sent (2^63 and more, `²`, `٣`, `Infinity`) must be the usual one-line 404/422, a tool
error or a CLI error: never `internal error: OverflowError`, a 500, or job 3 for `٣`.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp, wait_status
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, web  # noqa: F401  (fixture)

HUGE = str(2**63)
HUGER = "9" * 30


def make_jobs(orch: Orchestrator, workdir: Path, names: list[str], n: int = 3, first_key: int = 1) -> list[int]:
    """Jobs over a small JSONL source whose keys are numbers too (first_key, first_key + 1, ...),
    created, not run."""
    (workdir / "items.jsonl").write_text("".join(json.dumps({"id": str(i)}) + "\n"
                                                 for i in range(first_key, first_key + n)))
    return [orch.create({"name": name, "source": {"kind": "jsonl", "path": "items.jsonl", "key": "id"},
                         "worker": "command", "worker_options": {"command": "echo {{ id }}"}}).job_id
            for name in names]


def assert_cli_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """One `error:` line on stderr, exit 1, no traceback, no internal error."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- REST ----------------------------------------------------------------------------------------


def test_rest_ids_and_numbers_out_of_range_are_404_or_422(web: Web) -> None:  # noqa: F811
    jobs = make_jobs(web.orch, web.workdir, ["a", "b", "c"])
    assert jobs[2] == 3
    job = jobs[0]
    not_found = [f"/api/jobs/{HUGE}", f"/api/jobs/{HUGER}", "/api/jobs/%C2%B2", "/api/jobs/%D9%A3",
                 f"/api/jobs/{job}/units/{HUGE}", f"/api/jobs/{job}/units/%C2%B2", f"/api/jobs/{job}/units/%D9%A3",
                 f"/api/jobs/{job}/units/{HUGE}/events", f"/api/jobs/{HUGE}/units", f"/api/jobs/{HUGE}/logs",
                 f"/api/jobs/{job}/stream?unit={HUGE}", f"/api/jobs/{job}/logs?unit={HUGE}"]
    for path in not_found:
        response = web.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert set(response.json()) == {"error", "hint"} and "internal" not in response.json()["error"]
    invalid = ["/api/jobs?offset=" + HUGE, "/api/jobs?limit=" + HUGE, f"/api/jobs/{job}/units?offset={HUGE}",
               f"/api/jobs/{job}/units?limit=%C2%B2", f"/api/jobs/{job}/logs?before={HUGE}",
               f"/api/jobs/{job}/logs?after={HUGE}", f"/api/jobs/{job}/logs?limit={HUGE}",
               f"/api/jobs/{job}/events?after={HUGE}", f"/api/jobs/{job}/units/1/events?after={HUGE}",
               f"/api/jobs/{job}/units/1/events?limit={HUGE}", f"/api/jobs/{job}/timeseries?buckets={HUGE}",
               f"/api/jobs/{job}/active?limit={HUGE}", f"/api/stream?offset={HUGE}", f"/api/stream?limit={HUGE}",
               f"/api/jobs/{job}/stream?after={HUGE}", f"/api/jobs/{job}/stream?after=%D9%A3"]
    for path in invalid:
        response = web.get(path)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert "internal" not in response.json()["error"]
    assert web.get(f"/api/jobs/{job}/logs?before=0").status_code == 200
    # A reconnecting browser's Last-Event-ID past the store's range is no error either.
    with web.client.stream("GET", f"/api/jobs/{job}/stream", headers={"last-event-id": HUGER}) as stream:
        assert stream.status_code == 200


def test_rest_job_spec_numbers_are_bounded_and_finite(web: Web) -> None:  # noqa: F811
    (web.workdir / "items.jsonl").write_text('{"id": 1}\n')
    base = {"name": "n", "source": {"kind": "jsonl", "path": "items.jsonl"}, "worker": "command",
            "worker_options": {"command": "echo hi"}}
    for field, value in [("rpm", HUGE), ("tpm", HUGE), ("concurrency", HUGE), ("max_retries", HUGE),
                         ("timeout_s", "Infinity"), ("timeout_s", "1e309"), ("budget_usd", "NaN"),
                         ("quota_wait_s", "1e300"), ("budget_usd", "-1")]:
        body = json.dumps(base)[:-1] + f', "{field}": {value}}}'
        response = web.client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, (field, value, response.text)
        assert field.replace("_", "-") in response.json()["error"] or field in response.json()["error"]
    assert web.ok("GET", "/api/jobs")["total"] == 0  # nothing half-created


def test_openapi_documents_the_bounds(web: Web) -> None:  # noqa: F811
    doc = web.ok("GET", "/openapi.json")

    def param(path: str, name: str) -> dict[str, Any]:
        params = doc["paths"][path]["get"]["parameters"]
        schema = next(p["schema"] for p in params if p["name"] == name)
        return schema["anyOf"][0] if "anyOf" in schema else schema  # an optional one: int | None

    assert param("/api/jobs", "offset")["maximum"] == 2**31 - 1
    assert param("/api/jobs/{job}/units", "limit")["maximum"] == 1000
    assert param("/api/jobs/{job}/logs", "before")["maximum"] == 2**31 - 1
    assert param("/api/stream", "offset")["minimum"] == 0
    spec = doc["components"]["schemas"]["JobSpec"]["properties"]
    assert spec["rpm"]["anyOf"][0]["maximum"] == 1_000_000
    assert spec["timeout_s"]["maximum"] == 7 * 24 * 3600


def test_rest_ambiguous_job_name_names_the_ids(web: Web) -> None:  # noqa: F811
    make_jobs(web.orch, web.workdir, ["dup", "dup", "solo"])
    response = web.get("/api/jobs/dup")
    assert response.status_code == 422
    assert response.json()["error"] == "job name 'dup' matches jobs 1, 2; use an id"
    assert web.ok("GET", "/api/jobs/solo")["id"] == 3
    assert web.ok("GET", "/api/jobs/2")["name"] == "dup"
    again = web.ok("POST", "/api/jobs", {"name": "dup", "source": {"kind": "jsonl", "path": "items.jsonl"},
                                         "worker": "command", "worker_options": {"command": "echo"}}, status=201)
    assert again["same_name_jobs"] == [1, 2]  # names may repeat (re-runs); the answer says so


# -- MCP -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_mcp_refuses_out_of_range_ids_and_ambiguous_names(workdir: Path, orch: Orchestrator) -> None:
    make_jobs(orch, workdir, ["dup", "dup", "three"])
    async with mcp_session(workdir) as session:
        for job in (HUGE, HUGER, "²", "٣", 2**63, 2**31):
            text = await call_error(session, "get_job_status", job_id=job)
            assert text.startswith("no job"), (job, text)
        assert (await call(session, "get_job_status", job_id="3"))["name"] == "three"
        assert (await call(session, "get_job_status", job_id="three"))["id"] == 3
        text = await call_error(session, "get_job_status", job_id="dup")
        assert text == "job name 'dup' matches jobs 1, 2; use an id"
        for unit in (HUGE, 2**63, "²"):
            assert "has no unit" in await call_error(session, "get_unit", job_id=1, unit=unit)
        for tool, args in [("get_results", {"job_id": 1, "offset": 2**63}),
                           ("list_jobs", {"offset": 2**63}),
                           ("create_job", {"name": "x", "source": {"kind": "jsonl", "path": "items.jsonl"},
                                           "worker": "command", "worker_options": {"command": "echo"},
                                           "timeout_s": 1e300})]:
            text = await call_error(session, tool, **args)
            assert "internal" not in text and "Overflow" not in text, (tool, text)
        assert len((await call(session, "list_jobs"))["jobs"]) == 3


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_ids_numbers_and_names(workdir: Path, orch: Orchestrator) -> None:
    make_jobs(orch, workdir, ["dup", "dup", "three"])
    for job in (HUGE, HUGER, "²", "٣"):
        assert_cli_error(abp("status", job, cwd=workdir), "no job")
    assert_cli_error(abp("show", "3", HUGE, cwd=workdir), "has no unit")
    assert_cli_error(abp("status", "dup", cwd=workdir), "job name 'dup' matches jobs 1, 2; use an id")
    created = abp("create", "--name", "r", "--jsonl", "items.jsonl", "--command", "echo {{ id }}",
                  "--rpm", HUGE, cwd=workdir)
    assert_cli_error(created, "rpm")
    created = abp("create", "--name", "t", "--jsonl", "items.jsonl", "--command", "echo {{ id }}",
                  "--timeout", "inf", cwd=workdir)
    assert_cli_error(created, "timeout")
    limit = abp("logs", "3", "--limit", HUGE, cwd=workdir)
    assert limit.returncode == 2 and "Traceback" not in limit.stderr and "--limit" in limit.stderr
    assert len(orch.list_jobs()) == 3  # nothing half-created
    three = json.loads(abp("status", "three", "--json", cwd=workdir).stdout)
    assert three["id"] == 3
    rerun = abp("create", "--name", "three", "--jsonl", "items.jsonl", "--command", "echo {{ id }}", cwd=workdir)
    assert rerun.returncode == 0 and rerun.stdout.strip() == "4"
    assert "job 3 has the same name: refer to this one by its id 4" in rerun.stderr
    assert_cli_error(abp("status", "three", cwd=workdir), "job name 'three' matches jobs 3, 4; use an id")


# -- unit numbers and explicit keys ----------------------------------------------------------------


def run_second_job(orch: Orchestrator, workdir: Path) -> int:
    """Two jobs whose keys are "2", "3", "4" (so key "2" is unit 1 and unit 2 has key "3"); the second
    one run to the end. Its units are 4..6 in the store, 1..3 to users."""
    _, job = make_jobs(orch, workdir, ["first", "second"], first_key=2)
    orch.start(job, skip_test=True)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}).status == "COMPLETED"
    return job


def test_rest_units_are_numbered_per_job_and_keys_are_explicit(web: Web) -> None:  # noqa: F811
    job = run_second_job(web.orch, web.workdir)
    one = web.ok("GET", f"/api/jobs/{job}/units/1")
    assert (one["number"], one["key"], one["job_id"]) == (1, "2", job)
    assert "id" not in one and "unit_id" not in one  # the global id stays inside the store
    assert web.ok("GET", f"/api/jobs/{job}/units/2")["key"] == "3"  # a number is never a key
    assert web.ok("GET", f"/api/jobs/{job}/units/key:2")["number"] == 1
    assert web.get(f"/api/jobs/{job}/units/4").status_code == 404  # key "4" exists, unit 4 does not
    assert web.get(f"/api/jobs/{job}/units/key:9").json()["error"] == f"job {job} has no unit key '9'"
    by_key = web.ok("GET", f"/api/jobs/{job}/units?key=4")
    assert [u["number"] for u in by_key["items"]] == [3] and by_key["total"] == 1
    page = web.ok("GET", f"/api/jobs/{job}/units")
    assert [u["number"] for u in page["items"]] == [1, 2, 3] and all("id" not in u for u in page["items"])
    assert [u["number"] for u in web.ok("GET", f"/api/jobs/{job}/units?sort=number&order=desc")["items"]] == [3, 2, 1]

    events = web.ok("GET", f"/api/jobs/{job}/events")["items"]
    assert {e["unit"] for e in events} == {1, 2, 3} and all("unit_id" not in e for e in events)
    assert {e["unit"] for e in web.ok("GET", f"/api/jobs/{job}/units/2/events")["items"]} == {2}
    logs = web.ok("GET", f"/api/jobs/{job}/logs?unit=2&level=debug")["items"]
    assert all(line["unit"] == 2 for line in logs)
    assert web.ok("GET", f"/api/jobs/{job}/logs?unit=key:3&level=debug")["items"] == logs
    conflict = web.post(f"/api/jobs/{job}/units/1/retry")
    assert conflict.status_code == 409 and conflict.json()["error"] == "cannot retry unit 1: it is COMPLETED"
    header = web.get(f"/api/jobs/{job}/results?format=csv").text.splitlines()[0]
    assert header.startswith("unit,key,")
    rows = [json.loads(line) for line in web.get(f"/api/jobs/{job}/results?format=jsonl").text.splitlines()]
    assert [(r["unit"], r["key"]) for r in rows] == [(1, "2"), (2, "3"), (3, "4")]


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_mcp_units_are_numbered_per_job(workdir: Path, orch: Orchestrator) -> None:
    job = run_second_job(orch, workdir)
    async with mcp_session(workdir) as session:
        one = await call(session, "get_unit", job_id=job, unit=1)
        assert (one["number"], one["key"], one["job_id"]) == (1, "2", job)
        assert (await call(session, "get_unit", job_id=job, unit="2"))["key"] == "3"
        assert (await call(session, "get_unit", job_id=job, unit="key:4"))["number"] == 3
        assert (await call_error(session, "get_unit", job_id=job, unit=4)).startswith(f"job {job} has no unit 4 (")
        rows = (await call(session, "get_results", job_id=job))["rows"]
        assert [(r["unit"], r["key"]) for r in rows] == [(1, "2"), (2, "3"), (3, "4")]


def test_cli_units_are_numbered_per_job(workdir: Path, orch: Orchestrator) -> None:
    job = run_second_job(orch, workdir)
    shown = json.loads(abp("show", str(job), "1", "--json", cwd=workdir).stdout)
    assert (shown["number"], shown["key"], shown["job_id"]) == (1, "2", job)
    assert json.loads(abp("show", str(job), "key:4", "--json", cwd=workdir).stdout)["number"] == 3
    report = abp("show", str(job), "2", cwd=workdir)
    assert report.returncode == 0 and f"job {job}: unit 2 (3)" in report.stdout
    assert_cli_error(abp("show", str(job), "4", cwd=workdir), f"job {job} has no unit 4")
    csv_out = abp("results", str(job), "--format", "csv", cwd=workdir).stdout
    assert csv_out.splitlines()[0].startswith("unit,key,")
    # csv, not split(","): a command unit's stdout column keeps its newline inside a quoted cell
    assert [row[:2] for row in list(csv.reader(io.StringIO(csv_out)))[1:]] == [["1", "2"], ["2", "3"], ["3", "4"]]


def test_sync_numbers_new_items_on(workdir: Path, orch: Orchestrator) -> None:
    (job,) = make_jobs(orch, workdir, ["grow"], n=2)
    with (workdir / "items.jsonl").open("a") as items:  # one known key again, two new ones
        items.write("".join(json.dumps({"id": k}) + "\n" for k in ("1", "7", "8")))
    synced = orch.sync(job)
    assert (synced.added, synced.existing) == (2, 3)
    assert [(r["unit"], r["key"]) for r in orch.results(job)] == [(1, "1"), (2, "2"), (3, "7"), (4, "8")]
