"""CPU per model call of each way the `openai` worker can send it: the SDK, and the lean path's
aiohttp and httpx clients (agentic_batch/workers/lean_http.py), without abp's engine around them.

What it measures: the scripted OpenAI server (`python -m agentic_batch.testing.openai_server
--latency L`, a subprocess) answers after L seconds; one asyncio loop sends N chat completions at
concurrency C through the worker's own `Send` function for each `http_client` (sdk, aiohttp, httpx),
plus a single plain `httpx.AsyncClient` with one pool (what a straightforward httpx port would do).
Arms alternate within each round; per arm the median wall time and CPU seconds of this process
(time.process_time, i.e. the client side only) over the rounds, as ms of CPU per call.

Run (from the repository root, with the venv's python):
    python bench/api_lean.py                      # 1,000 calls, latency 0.2 s, concurrency 100, 3 rounds
    python bench/api_lean.py --calls 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _agents as a
import _common as c

ARMS = ("sdk", "aiohttp", "httpx", "httpx one pool")


async def _send_all(arm: str, url: str, calls: int, concurrency: int) -> None:
    from agentic_batch.workers.registry import get_worker_kind

    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are an agent. " * 40},
                                                 {"role": "user", "content": "Repeat the title: item 1"}]}
    sem = asyncio.Semaphore(concurrency)
    close: Any
    if arm == "httpx one pool":
        import httpx

        client = httpx.AsyncClient(headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
                                   limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000))

        async def send(request: dict[str, Any], timeout: float) -> dict[str, Any]:
            response = await client.post(url + "/chat/completions", content=json.dumps(request).encode(),
                                         timeout=timeout)
            reply: dict[str, Any] = json.loads(response.content)
            return reply

        close = client.aclose
    else:
        worker: Any = get_worker_kind("openai").build({"model": "gpt-4o-mini", "base_url": url, "http_client": arm})
        send = worker._sender(arm, "sk-bench")
        close = worker.aclose

    async def one() -> None:
        async with sem:
            reply = await send(body, 600.0)
            assert reply["choices"][0]["message"]["content"]

    try:
        await asyncio.gather(*(one() for _ in range(calls)))
    finally:
        await close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    args = ap.parse_args()
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    ideal = args.calls * args.latency / args.concurrency
    print(f"# {args.calls} calls, latency {args.latency}s, concurrency {args.concurrency}, ideal {ideal:.2f} s; "
          f"{c.machine()}, load {os.getloadavg()[0]:.1f}, {datetime.datetime.now().isoformat(timespec='seconds')}")
    walls: dict[str, list[float]] = {arm: [] for arm in arms}
    cpus: dict[str, list[float]] = {arm: [] for arm in arms}
    with a.server("openai_server", "--latency", str(args.latency), "--scenario", "echo") as srv:
        for rnd in range(1, args.rounds + 1):
            for arm in arms:
                t0, cpu0 = time.perf_counter(), time.process_time()
                asyncio.run(_send_all(arm, srv.url, args.calls, args.concurrency))
                walls[arm].append(time.perf_counter() - t0)
                cpus[arm].append(time.process_time() - cpu0)
                print(f"round {rnd} {arm:>15}: wall {walls[arm][-1]:.2f} s, CPU {cpus[arm][-1]:.2f} s "
                      f"({1000 * cpus[arm][-1] / args.calls:.2f} ms/call), load {os.getloadavg()[0]:.1f}", flush=True)
    base = a.median(cpus[arms[0]])
    print(f"\nmedians over {args.rounds} rounds (CPU ratio to {arms[0]}):")
    for arm in arms:
        wall, cpu = a.median(walls[arm]), a.median(cpus[arm])
        print(f"  {arm:>15}: wall {wall:.2f} s ({wall / ideal:.2f}x ideal), CPU {1000 * cpu / args.calls:.2f} ms/call "
              f"({cpu / base:.2f}x)")


if __name__ == "__main__":
    main()
