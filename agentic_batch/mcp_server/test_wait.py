"""start_job's test step over MCP: the test unit runs in a detached process, and the call follows it.

A test unit may run for minutes (one whole agent run) while MCP clients give up on a request after
about 60 s (the MCP Inspector; others), and the Inspector's CLI shuts its stdio server down after
every call. So the test does not run inside this server: `Orchestrator.begin_test` starts it in a
process of its own, which holds the unit's lease and heartbeats, and survives this server. The call
waits for it, sending a progress notification every few seconds (when the request carries a
progressToken), and past `ABP_MCP_TEST_WAIT_SECONDS` (default 50) it answers "still running; call
start_job again" instead of blocking; the next call picks the same test run up where it is.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context

from agentic_batch.mcp_server.replies import in_thread
from agentic_batch.service import Orchestrator
from agentic_batch.service.models import TestProgress, TestSettled, TestUnderWay
from agentic_batch.states import JobStatus

WAIT_ENV = "ABP_MCP_TEST_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 50.0
POLL_SECONDS = 0.3
PROGRESS_EVERY_SECONDS = 2.0


def wait_seconds() -> float:
    """How long one start_job call waits for a test unit (env, for clients with shorter timeouts)."""
    try:
        value = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS))
    except ValueError:
        return DEFAULT_WAIT_SECONDS
    return value if 0 <= value < 3600 else DEFAULT_WAIT_SECONDS


async def follow_test(orch: Orchestrator, job_id: int | str, ctx: Context[Any, Any] | None) -> TestProgress:
    """Start the job's test (or join the one under way) and wait for it, up to `wait_seconds()`.

    Returns the service's test progress: state `done` (the result waits), `running` (still going when
    the wait ran out), or `none` (the test run ended without a result: it was interrupted)."""
    progress = await in_thread(orch.begin_test, job_id)
    deadline = time.monotonic() + wait_seconds()
    last_note = 0.0
    while isinstance(progress, TestUnderWay):
        now = time.monotonic()
        if now >= deadline:
            break
        if ctx is not None and now - last_note >= PROGRESS_EVERY_SECONDS:
            last_note = now
            await _progress(ctx, progress)
        await anyio.sleep(min(POLL_SECONDS, max(deadline - now, 0.01)))
        progress = await in_thread(orch.test_progress, progress.job_id)
    return progress


async def _progress(ctx: Context[Any, Any], progress: TestUnderWay) -> None:
    """One progress notification; elapsed seconds only ever grow, as the protocol asks of `progress`."""
    try:
        await ctx.report_progress(progress.elapsed_s, None,
                                  f"test unit {progress.unit} of job {progress.job_id} running for "
                                  f"{progress.elapsed_s:.0f}s")
    except Exception:  # a client that went away: the test goes on regardless
        pass


def still_running_view(progress: TestUnderWay) -> dict[str, Any]:
    job = progress.job_id
    return {
        "job_id": job, "job_status": JobStatus.TESTING, "test_running": True, "test_unit": progress.unit,
        "elapsed_s": progress.elapsed_s,
        "message": (f"The test unit is still running ({progress.elapsed_s:.0f}s so far) in a process of its own; "
                    "it goes on if this call or the MCP server ends."),
        "next_step": f"Call start_job(job_id={job}) again to wait for the test result (each call waits up to "
                     f"{wait_seconds():.0f}s).",
    }


def lost_view(progress: TestSettled) -> dict[str, Any]:
    job = progress.job_id
    return {"job_id": job, "job_status": progress.status, "test_running": False,
            "message": "The test run ended without a result (it was interrupted); the job is CREATED again.",
            "next_step": f"Call start_job(job_id={job}) to run the test again."}
