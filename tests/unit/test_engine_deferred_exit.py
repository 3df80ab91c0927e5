"""A worker that hands over its agent's exit (`UnitContext.defer_exit`): the executor records the unit's
result and starts the next unit at once, and still kills the exiting agent's processes, after the exit
grace, before the job ends. In-process, with a real `sleep` as the agent that never exits by itself."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from agentic_batch.engine.executor import Executor
from agentic_batch.engine.procs import process_alive
from agentic_batch.workers.base import UnitContext, UnitOutcome
from tests.fixtures.inprocess import ScriptedWorker, run, running_job


def test_a_units_slot_is_free_while_its_agent_still_exits_and_the_agent_is_killed_after_the_grace(
        orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=3, concurrency=1)
    agents: dict[str, int] = {}
    alive_at_start: dict[str, list[str]] = {}
    started = {key: asyncio.Event() for key in ("0", "1", "2", "3")}

    async def exits_slowly(ctx: UnitContext) -> UnitOutcome:
        alive_at_start[ctx.key] = [key for key, pid in agents.items() if process_alive(pid)]
        started[ctx.key].set()
        proc = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
        agents[ctx.key] = proc.pid
        ctx.processes.add(proc.pid)

        async def tail(grace: float) -> None:
            # The agent's exit lasts until the next unit has started (never, for the last one: that one is
            # killed after the grace); the engine kills what is left (here, all of it) when the tail ends.
            await asyncio.wait({asyncio.ensure_future(started[str(int(ctx.key) + 1)].wait())}, timeout=grace)

        assert ctx.defer_exit is not None, "an executor's pool offers defer_exit"
        ctx.defer_exit(tail)
        return UnitOutcome(output=f"done {ctx.key}")

    worker = ScriptedWorker(exits_slowly)
    settings = dataclasses.replace(orch.settings, exit_grace_seconds=2.0)
    ex = Executor(job, settings=settings, worker=worker, track_processes=False)
    assert run(ex) == 0
    status = orch.status(job)
    assert status.status == "COMPLETED" and status.completed == 3, status
    # concurrency 1, yet each next unit started while the previous one's agent was still exiting
    assert alive_at_start == {"0": [], "1": ["0"], "2": ["1"]}, alive_at_start
    # and the job ended only once every agent was gone
    assert [key for key, pid in agents.items() if process_alive(pid)] == []
    for unit in orch.results(job):
        assert [e.kind for e in orch.unit(job, unit["unit"]).events] == ["start", "end"]
