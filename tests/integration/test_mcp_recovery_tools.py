"""The MCP faces of issue 15's recovery tools, through `abp mcp` over stdio (the SDK's own client):
get_error_summary and retry_failed(error_group=N), resume_all_jobs; bad arguments are tool errors in
the tools' own words (argument names, not CLI flags)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jsonschema
import pytest

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.funcs import ref
from tests.fixtures.mcp_client import call, call_error, mcp_session

pytestmark = pytest.mark.timeout(120)


def failing_job(orch, workdir: Path, n: int = 12) -> int:  # type: ignore[no-untyped-def]
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    job = orch.create(JobSpec(name="causes", source={"kind": "jsonl", "path": str(path), "key": "id"},
                              worker="python", worker_options={"function": ref("fail_by_cause")}, max_retries=0),
                      cwd=workdir).job_id
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"FAILED"}, timeout=60)
    return job


@pytest.mark.asyncio
async def test_error_summary_and_retrying_one_group(orch, workdir: Path, tmp_path: Path) -> None:
    job = failing_job(orch, workdir)
    flag = tmp_path / "fixed"
    flag.write_text("")
    async with mcp_session(workdir, env={"ABP_TEST_FLAG": str(flag)}) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert tools["get_error_summary"].annotations.read_only_hint
        summary = await call(session, "get_error_summary", job_id=job, examples=2)
        jsonschema.validate(summary, tools["get_error_summary"].output_schema)
        assert summary["failed"] == 9 and len(summary["groups"]) == 3
        key_error = next(g for g in summary["groups"] if g["signature"] == "KeyError: <str>")
        assert key_error["count"] == 3 and [u["number"] for u in key_error["units"]] == [4, 8]

        assert await call_error(session, "retry_failed", job_id=job, error_group=9) == (
            f"job {job} has 3 error groups; error_group 9 is not one of them (see `abp errors {job}`)")
        both = await call_error(session, "retry_failed", job_id=job, error_group=1, include_cancelled=True)
        assert both.startswith("give error_group or include_cancelled, not both")
        assert "error_group" in await call_error(session, "retry_failed", job_id=job, error_group=0)
        assert "examples" in await call_error(session, "get_error_summary", job_id=job, examples=99)
        assert "no job 'nope'" in await call_error(session, "get_error_summary", job_id="nope")
        assert "has no argument 'group'" in await call_error(session, "get_error_summary", job_id=job, group=1)

        retried = await call(session, "retry_failed", job_id=job, error_group=key_error["group"])
        assert retried["status"] in ("RUNNING", "FAILED")
        final = wait_status(orch, job, {"FAILED"}, timeout=60)
        wait_until(lambda: orch.status(job).completed == 6, 60, "the KeyError group to complete")
        assert final.failed + final.completed == 12
        after = await call(session, "get_error_summary", job_id=job)
        assert {g["signature"] for g in after["groups"]} == {"cannot open <str>: no such file",
                                                             "unit-<n> timed out after <n>s waiting for lock <hex>"}


@pytest.mark.asyncio
async def test_resume_all_jobs(orch, workdir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    path = workdir / "gated.jsonl"
    path.write_text("".join(json.dumps({"id": i, "gate": str(gate)}) + "\n" for i in range(8)))
    job = orch.create(JobSpec(name="gated", source={"kind": "jsonl", "path": str(path), "key": "id"},
                              worker="python", worker_options={"function": ref("gated")}, concurrency=2),
                      cwd=workdir).job_id
    orch.start(job, skip_test=True)
    pid = wait_until(lambda: orch.status(job).executor.pid if orch.status(job).executor.state == "running" else None)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: orch.status(job).executor.state == "lost", 15, "a lost executor")
    async with mcp_session(workdir) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        report = await call(session, "resume_all_jobs")
        jsonschema.validate(report, tools["resume_all_jobs"].output_schema)
        assert report["resumed"] == 1 and report["jobs"][0]["job_id"] == job
        again = await call(session, "resume_all_jobs")
        assert [row["outcome"] for row in again["jobs"]] == ["running"]  # its new executor is alive
    gate.write_text("")
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 8
