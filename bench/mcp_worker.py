"""What one shared MCP session buys the `mcp` worker: a server start against a tool call, and a real job.

Figures printed:
- the cost of one session start (spawn the stdio server, `initialize`, `tools/list`): what a unit
  would pay if each unit started its server, as the API workers' tool loops do;
- calls per second through one shared session, in-process (no store), at `--max-calls` in flight;
- a real job through the CLI and a detached executor (`abp create` + `abp start --skip-test`):
  N units of the test server's `shout` tool over stdio, units per second from start to COMPLETED.

    python bench/mcp_worker.py                     # 3 starts, 1,000 calls, a 500-unit job
    python bench/mcp_worker.py --calls 5000 --units 2000 --max-calls 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

HERE = Path(__file__).resolve().parent.parent
SERVER = HERE / "tests" / "fixtures" / "mcp_unit_server.py"


def write_config(folder: Path) -> Path:
    path = folder / "servers.json"
    path.write_text(json.dumps({"mcpServers": {"units": {"command": sys.executable, "args": [str(SERVER)]}}}))
    return path


async def session_start_s(config: Path, tmp: Path) -> float:
    from agentic_batch.workers.mcp_connect import load_mcp_config, open_session
    from agentic_batch.workers.process import SharedProcesses

    tracker = SharedProcesses()
    t0 = time.perf_counter()
    async with AsyncExitStack() as stack:
        await open_session(load_mcp_config(config)[0], stack, tracker=tracker, cwd=tmp)
        elapsed = time.perf_counter() - t0
    tracker.kill_all()
    return elapsed


async def shared_calls(config: Path, tmp: Path, calls: int, max_calls: int) -> tuple[float, float]:
    """(seconds for the first call, which starts the server; calls/s for the rest)."""
    from agentic_batch.workers.base import UnitContext
    from agentic_batch.workers.process import SharedProcesses
    from agentic_batch.workers.registry import get_worker_kind
    from agentic_batch.testing import SetTracker

    worker: Any = get_worker_kind("mcp").build({"mcp_config": str(config), "tool": "units.shout",
                                                "arguments": {"text": "{{ word }}", "times": 2},
                                                "max_concurrent_calls": max_calls})
    shared = SharedProcesses()

    def ctx(i: int) -> UnitContext:
        return UnitContext(job_id=1, job_name="bench", unit_id=i, key=str(i), seq=i, attempt=1, prompt=None,
                           payload={"word": f"w{i}"}, source_kind="jsonl", workspace=tmp, allowed_dirs=[tmp],
                           timeout=60, emit=lambda kind, data: None, processes=SetTracker(), workdir=tmp,
                           shared_processes=shared)

    try:
        t0 = time.perf_counter()
        first = await worker.run(ctx(0))
        assert first.ok, first.error
        start = time.perf_counter() - t0
        gate = asyncio.Semaphore(max_calls * 2)  # as the engine's pool bounds units in flight

        async def one(i: int) -> None:
            async with gate:
                outcome = await worker.run(ctx(i))
                assert outcome.ok, outcome.error

        t1 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(1, calls)))
        return start, (calls - 1) / (time.perf_counter() - t1)
    finally:
        await worker.aclose()


def job_units_per_s(tmp: Path, config: Path, units: int, concurrency: int) -> tuple[float, str]:
    items = tmp / "words.jsonl"
    items.write_text("".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(units)))
    job, _ = c.create_job("--name", "mcp-bench", "--jsonl", str(items), "--key", "id", "--worker", "mcp",
                          "--mcp-config", str(config), "--tool", "units.shout", "--arguments",
                          '{"text": "{{ word }}"}', "--concurrency", str(concurrency), cwd=tmp)
    orch = c.orchestrator()
    t0 = time.perf_counter()
    c.abp("start", str(job), "--skip-test", cwd=tmp)
    record = c.wait_final(orch, job)
    elapsed = time.perf_counter() - t0
    return units / elapsed, f"{record.status} in {elapsed:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--max-calls", type=int, default=8)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {c.machine()}")
    with c.temp_home() as tmp:
        config = write_config(tmp)
        starts = [asyncio.run(session_start_s(config, tmp)) for _ in range(args.starts)]
        print(f"one session start (spawn + initialize + tools/list): median {statistics.median(starts) * 1000:.0f} ms "
              f"of {args.starts} ({', '.join(f'{s * 1000:.0f}' for s in starts)} ms)")
        start, rate = asyncio.run(shared_calls(config, tmp, args.calls, args.max_calls))
        print(f"shared session, in-process: first call (starts the server) {start * 1000:.0f} ms, then "
              f"{rate:.0f} calls/s over {args.calls - 1} calls at {args.max_calls} in flight")
        job_rate, how = job_units_per_s(tmp, config, args.units, args.concurrency)
        print(f"real job, {args.units} units at --concurrency {args.concurrency}: {job_rate:.0f} units/s ({how}, "
              f"from `abp start` to the job's end, executor start included)")


if __name__ == "__main__":
    main()
