"""The `openai` worker against a model with fixed latency: wall time next to the ideal.

What it measures: the scripted OpenAI-compatible server
(`python -m agentic_batch.testing.openai_server --latency 0.2 --scenario echo`, a subprocess on
127.0.0.1) answers every chat completion after 200 ms. A JSONL job of N units (default 2,000) for the
`openai` worker (`--model gpt-4o-mini --price-in 0.15 --price-out 0.6 --base-url <server>`,
OPENAI_API_KEY dummy) runs at concurrency C (default 100), started with `abp start JOB --skip-test`.
Each unit is one model call (the echo scenario answers with text, no tool calls).

  ideal = units x latency / concurrency   (2,000 x 0.2 s / 100 = 4 s)

Figures: wall time from invoking `abp start` to the job's finished_at, and the executor's working
span (first unit claimed to last unit finished, i.e. without process start-up), each as a multiple
of the ideal; the server's request count (must equal the units) and the executor's CPU seconds.

Run (from the repository root, with the venv's python):
    python bench/openai_latency.py                         # 2,000 units, latency 0.2 s, concurrency 100
    python bench/openai_latency.py --units 4000 --latency 0.5 --rounds 3

Uses a throwaway ABP_HOME per run; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _agents as a
import _common as c


def bare_run(units: int, concurrency: int, latency: float) -> tuple[float, float, float, float]:
    """Seconds for the same requests (system + user message + the four built-in tool definitions) from
    one asyncio loop: AsyncOpenAI, a semaphore of `concurrency`, no store, no engine.
    Returns (seconds, CPU seconds of this loop, CPU seconds of the server, machine busy core-seconds)."""
    import asyncio
    import time
    from types import SimpleNamespace

    from openai import AsyncOpenAI

    from agentic_batch.workers.tool_loop import DEFAULT_SYSTEM_PROMPT
    from agentic_batch.workers.tools import Toolbox, builtin_tools

    with c.temp_home() as tmp, a.server("openai_server", "--latency", str(latency), "--scenario", "echo") as srv:
        fake_ctx = SimpleNamespace(workspace=tmp, allowed_dirs=[tmp])
        tools = Toolbox(builtin_tools(fake_ctx)).openai_tools()  # type: ignore[arg-type]
        system = f"{DEFAULT_SYSTEM_PROMPT}\n\nWorking directory: {tmp}"

        async def main() -> None:
            client = AsyncOpenAI(api_key="sk-dummy-bench", base_url=srv.url, max_retries=0, timeout=600)
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with sem:
                    messages = [{"role": "system", "content": system},
                                {"role": "user", "content": f"Repeat the title: item {i}"}]
                    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                                 tools=tools, timeout=600)
                    assert reply.choices[0].message.content

            await asyncio.gather(*(one(i) for i in range(units)))
            await client.close()

        busy0 = a.machine_busy_s()
        t0, cpu0 = time.perf_counter(), time.process_time()
        asyncio.run(main())
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        busy = a.machine_busy_s() - busy0
        srv.stop()
        return seconds, cpu, srv.cpu_s, busy


def one_run(units: int, concurrency: int, latency: float, keep: bool, py_spy: Path | None = None) -> dict:
    with c.temp_home(keep=keep) as tmp, \
            a.server("openai_server", "--latency", str(latency), "--scenario", "echo") as srv:
        res = a.run_openai_job(srv.url, tmp, "openai-latency", units, concurrency, "--max-retries", "3",
                               py_spy=py_spy)
        srv.stop()
        res["server"] = srv.counts()
        res["server_cpu_s"] = srv.cpu_s
    if res["status"] != "COMPLETED" or res["counts"].get("COMPLETED") != units:
        raise SystemExit(f"job ended {res['status']} with {res['counts']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per reply")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--py-spy", type=Path, help="sample the executor with py-spy into this raw file (last run)")
    ap.add_argument("--bare", action="store_true",
                    help="also time the same requests from one asyncio loop with AsyncOpenAI and no abp")
    args = ap.parse_args()
    ideal = args.units * args.latency / args.concurrency
    print(f"# openai worker: {args.units} units, latency {args.latency}s, concurrency {args.concurrency}, "
          f"ideal {ideal:.2f} s")
    print(f"# {c.machine()}, {datetime.datetime.now().isoformat(timespec='seconds')}")
    if args.bare:
        bare, bare_cpu, bare_srv_cpu, busy = bare_run(args.units, args.concurrency, args.latency)
        print(f"bare AsyncOpenAI loop (no abp): {bare:.2f} s ({bare / ideal:.2f}x ideal); CPU: the loop "
              f"{bare_cpu:.1f} s, server {bare_srv_cpu:.1f} s, whole machine busy {busy:.1f} of "
              f"{bare * (os.cpu_count() or 1):.1f} core-s", flush=True)
    walls, spans = [], []
    for rnd in range(1, args.rounds + 1):
        r = one_run(args.units, args.concurrency, args.latency, args.keep, args.py_spy)
        wall = r["finished"] - r["t0"]
        span = r["last_finish"] - r["first_start"]
        walls.append(wall)
        spans.append(span)
        print(f"run {rnd}: wall {wall:.2f} s ({wall / ideal:.2f}x ideal); executor span {span:.2f} s "
              f"({span / ideal:.2f}x ideal); abp start returned after {r['start_returned'] - r['t0']:.2f} s, "
              f"first unit claimed at {r['first_start'] - r['t0']:.2f} s, first finished at "
              f"{r['first_finish'] - r['t0']:.2f} s; {r['counts']}, attempts {r['attempts']}, "
              f"server requests {r['server'].get('requests')}; CPU: executor {r['executor_cpu_s']:.1f} s, "
              f"server {r['server_cpu_s']:.1f} s, whole machine busy {r['machine_busy_s']:.1f} of "
              f"{r['machine_s']:.1f} core-s",
              flush=True)
    wall, span = a.median(walls), a.median(spans)
    print(f"median wall {wall:.2f} s = {wall / ideal:.2f}x ideal ({ideal:.2f} s); "
          f"median executor span {span:.2f} s = {span / ideal:.2f}x ideal; "
          f"achieved {args.units / span:.0f} units/s in the span vs ideal {args.concurrency / args.latency:.0f}")
    if args.py_spy:
        a.spy_breakdown(args.py_spy, ("openai/", "httpx/", "httpcore", "anyio/", "h11/"))


if __name__ == "__main__":
    main()
