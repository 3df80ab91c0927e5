"""References users type, through every interface: ids are ASCII digits in the store's range, every
number has bounds, and a job name several jobs share is refused with their ids.

What the fuzzer sent (2^63 and more, `²`, `٣`, `Infinity`) must be the usual one-line 404/422, a tool
error or a CLI error: never `internal error: OverflowError`, a 500, or job 3 for `٣`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, web  # noqa: F401  (fixture)

HUGE = str(2**63)
HUGER = "9" * 30


def make_jobs(orch: Orchestrator, workdir: Path, names: list[str], n: int = 3) -> list[int]:
    """Jobs over a small JSONL source whose keys are numbers too ("1".."n"), created, not run."""
    (workdir / "items.jsonl").write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(1, n + 1)))
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
            assert "has no unit" in await call_error(session, "get_unit", job_id=1, unit_id=unit)
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
    assert len(orch.list()) == 3  # nothing half-created
    three = json.loads(abp("status", "three", "--json", cwd=workdir).stdout)
    assert three["id"] == 3
