"""start_job with a test unit longer than a client waits: progress notifications, "still running" past
ABP_MCP_TEST_WAIT_SECONDS (small here), a test that survives its MCP server being killed, and a
start_job while a test runs that waits for it within the call.

The test unit is a command that sleeps until a `go` file exists, so the test decides when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import ABP, processes_with, wait_until
from tests.fixtures.mcp_client import call, mcp_session, server_pids

pytestmark = pytest.mark.timeout(120)

SCRIPT = 'while [ ! -e go ]; do sleep 0.1; done; echo "done $1"'
SHORT_WAIT = {"ABP_MCP_TEST_WAIT_SECONDS": "1.5"}


def gated_job(workdir: Path) -> dict[str, Any]:
    (workdir / "rows.csv").write_text("id\n1\n2\n3\n")
    return {"name": "gated", "source": {"kind": "csv", "path": str(workdir / "rows.csv"), "key": "id"},
            "worker": "command", "worker_options": {"command": f"sh -c '{SCRIPT}' abp-gated-unit {{{{ id }}}}"}}


def agent_pids() -> list[int]:
    return processes_with("abp-gated-unit")


@pytest.mark.asyncio
async def test_a_long_test_unit_sends_progress_returns_still_running_and_survives_the_server(
        workdir: Path, orch: Orchestrator) -> None:
    notes: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    async with mcp_session(workdir, env=SHORT_WAIT) as session:
        [server_pid] = server_pids()
        job = (await call(session, "create_job", **gated_job(workdir)))["job_id"]
        result = await session.call_tool("start_job", {"job_id": job}, progress_callback=on_progress)
        assert not result.is_error, result.content
        first = json.loads(result.content[0].text)  # type: ignore[union-attr]
        assert first["test_running"] is True and first["job_status"] == "TESTING", first
        assert f"start_job(job_id={job}) again" in first["next_step"]
        assert notes and all("running for" in (m or "") for _, _, m in notes)
        assert [p for p, _, _ in notes] == sorted(p for p, _, _ in notes)  # progress only grows
        test_pid = orch.status(job).executor.pid
        assert test_pid != server_pid and os.getsid(test_pid) == test_pid  # detached from the server
        # the short wait may run out before the test process has started the agent (a loaded host)
        wait_until(agent_pids, timeout=60, what="the test unit's agent to run")
        os.kill(server_pid, signal.SIGKILL)  # the client shuts the server down, as the Inspector CLI does
    assert agent_pids(), "the test unit died with the MCP server"
    assert orch.status(job).status == "TESTING"

    async with mcp_session(workdir, env=SHORT_WAIT) as session:
        again = await call(session, "start_job", job_id=job)  # still running: picked up, not started twice
        assert again.get("test_running") is True and again["test_unit"] == first["test_unit"] == 1, again
        (workdir / "go").touch()
        done = await call(session, "start_job", job_id=job)
        deadline = time.monotonic() + 30
        while done.get("test_running") and time.monotonic() < deadline:
            done = await call(session, "start_job", job_id=job)
        assert done["test_passed"] is True, done
        assert done["test_unit"]["output"].strip() == "done 1" and done["test_unit"]["attempts"] == 1
        assert "approve=true" in done["next_step"]
        started = await call(session, "start_job", job_id=job, approve=True)
        assert started["status"] in ("RUNNING", "COMPLETED")
        status = await call(session, "get_job_status", job_id=job, wait_seconds=30)
        assert (status["status"], status["completed"]) == ("COMPLETED", 3)


@pytest.mark.asyncio
async def test_a_test_run_that_dies_is_run_again_and_a_concurrent_start_waits(workdir: Path,
                                                                             orch: Orchestrator) -> None:
    async with mcp_session(workdir, env={"ABP_MCP_TEST_WAIT_SECONDS": "0.5"}) as session:
        job = (await call(session, "create_job", **gated_job(workdir)))["job_id"]
        first = await call(session, "start_job", job_id=job)
        assert first["test_running"] is True
        test_pid = orch.status(job).executor.pid
        os.kill(test_pid, signal.SIGKILL)  # the detached test process itself dies
        for pid in agent_pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while orch.status(job).executor.state == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        (workdir / "go").touch()
        again = await call(session, "start_job", job_id=job)  # reclaimed (dead pid) and tested anew
        while again.get("test_running"):
            again = await call(session, "start_job", job_id=job)
        assert again["test_passed"] is True and again["test_unit"]["attempts"] == 2, again
        assert any(f"pid {test_pid}" in r.message and "ended without a result" in r.message
                   for r in orch.logs(job, level="warning"))

    # A start_job while a live test runs (here from the CLI's in-process test) waits for it in the call.
    (workdir / "go").unlink()
    other = (await _create(workdir))
    cli = subprocess.Popen([*ABP, "start", str(other)], cwd=workdir, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: orch.status(other).running == 1, timeout=30, what="the CLI's test to start")
        async with mcp_session(workdir, env={"ABP_MCP_TEST_WAIT_SECONDS": "20"}) as session:
            (workdir / "go").touch()
            waited = await call(session, "start_job", job_id=other)
            assert waited.get("test_passed") is True, waited
        assert cli.wait(timeout=30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()


async def _create(workdir: Path) -> int:
    async with mcp_session(workdir) as session:
        return int((await call(session, "create_job", **{**gated_job(workdir), "name": "second"}))["job_id"])
