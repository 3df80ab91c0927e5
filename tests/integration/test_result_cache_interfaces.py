"""The result cache over REST and MCP: `cache` is a create field/argument, the start and retry replies
carry the plan (cached, to run, projected cost), unit views name where a cached result came from, and
`cache` with `isolate: worktree` is refused in each interface's words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import wait_status
from tests.fixtures.funcs import ref
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, spec, web  # noqa: F401  (the server fixture)

ROWS = [{"id": i, "name": f"item-{i}"} for i in range(4)]


def cached_spec(workdir: Path, name: str) -> dict[str, Any]:
    return {**spec(workdir, "nap", rows=ROWS, name=name, prompt="hi {{ row.name }}", cache=True),
            "worker_options": {"function": ref("echo")}}


def test_rest_start_reply_carries_the_plan_and_units_their_source(web: Web) -> None:  # noqa: F811
    first = web.ok("POST", "/api/jobs", cached_spec(web.workdir, "first"), status=201)["job_id"]
    started = web.ok("POST", f"/api/jobs/{first}/start", {"skip_test": True})
    assert started["plan"] == {"cached": 0, "unchanged": 0, "to_run": 4, "projected_cost_usd": None}
    wait_status(web.orch, first, {"COMPLETED"})
    second = web.ok("POST", "/api/jobs", cached_spec(web.workdir, "second"), status=201)["job_id"]
    started = web.ok("POST", f"/api/jobs/{second}/start", {"skip_test": True})
    assert started["plan"]["cached"] == 4 and started["plan"]["to_run"] == 0
    assert started["cache"] is True
    wait_status(web.orch, second, {"COMPLETED"})
    assert web.ok("GET", f"/api/jobs/{second}")["cached"] == 4
    unit = web.ok("GET", f"/api/jobs/{second}/units/2")
    assert unit["cached_from"] == {"job_id": first, "unit": 2} and unit["output"] == "1:hi item-1"
    rows = web.ok("GET", f"/api/jobs/{second}/units")["items"]
    assert [r["cached_from"] for r in rows] == [{"job_id": first, "unit": n} for n in range(1, 5)]
    schema = web.ok("GET", "/openapi.json")
    assert "cache" in schema["components"]["schemas"]["JobSpec"]["properties"]
    refused = web.client.post("/api/jobs", json={**cached_spec(web.workdir, "iso"), "isolate": "worktree"})
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("cache does not apply to isolate worktree jobs")


@pytest.mark.asyncio
async def test_mcp_start_job_reply_carries_the_plan(workdir: Path, orch: Orchestrator) -> None:
    job = {"name": "m", "source": {"kind": "jsonl", "path": str(workdir / "items.jsonl"), "key": "id"},
           "worker": "python", "worker_options": {"function": ref("echo")}, "prompt": "hi {{ row.name }}",
           "cache": True}
    (workdir / "items.jsonl").write_text("".join(f'{{"id": {r["id"]}, "name": "{r["name"]}"}}\n' for r in ROWS))
    async with mcp_session(workdir) as session:
        first = (await call(session, "create_job", **job))["job_id"]
        started = await call(session, "start_job", job_id=first, skip_test=True)
        assert started["plan"]["to_run"] == 4 and started["plan"]["cached"] == 0
        wait_status(orch, first, {"COMPLETED"})
        second = (await call(session, "create_job", **{**job, "name": "m2"}))["job_id"]
        started = await call(session, "start_job", job_id=second, skip_test=True)
        assert started["plan"]["cached"] == 4 and started["plan"]["to_run"] == 0
        wait_status(orch, second, {"COMPLETED"})
        assert (await call(session, "get_job_status", job_id=second))["cached"] == 4
        unit = await call(session, "get_unit", job_id=second, unit=1)
        assert unit["cached_from"] == {"job_id": first, "unit": 1}
        error = await call_error(session, "create_job", **{**job, "name": "iso", "isolate": "worktree"})
        assert "cache does not apply to isolate worktree jobs" in error
