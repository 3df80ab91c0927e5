"""The Anthropic batch provider on a 10,000-request batch: submit time, results read rate, and this
process's RSS while it reads the results JSONL (it must stay flat: the file is streamed, never loaded).

What it does: starts the scripted Anthropic server in its own process (`python -m
agentic_batch.testing.anthropic_server --pad 2000`, each answer ~2 KB of text, so 10,000 lines
make a ~25 MB results file), submits N requests through `AnthropicBatchProvider.submit` (the real
`anthropic` SDK), polls `status` until the batch ends, then iterates `results`, keeping nothing but a
count and the token sums, and samples VmRSS of this process every 1,000 lines. For comparison it then
reads the same results into a list (what "loaded whole" would cost).

Run (from the repository root, with the venv's python):
    python bench/anthropic_batch_results.py                 # 10,000 requests
    python bench/anthropic_batch_results.py --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentic_batch.batchapi.anthropic_batch import AnthropicBatchProvider
from agentic_batch.batchapi.provider import BatchRequest, make_custom_id
from agentic_batch.workers.anthropic_messages import AnthropicOptions


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(url: str, n: int) -> None:
    provider = AnthropicBatchProvider(AnthropicOptions(model="claude-haiku-4-5", base_url=url))
    requests = [BatchRequest(make_custom_id(i, 1), provider.request_body(system=None, prompt=f"item {i}",
                                                                         output_schema=None))
                for i in range(1, n + 1)]
    t0 = time.perf_counter()
    batch_id = await provider.submit(requests, tag="bench")
    submit_s = time.perf_counter() - t0
    del requests
    while not (await provider.status(batch_id)).state.finished:
        await asyncio.sleep(0.2)
    base = rss_mb()
    samples: list[tuple[int, float]] = [(0, base)]
    count = tokens = 0
    t0 = time.perf_counter()
    async for result in provider.results(batch_id):
        count += 1
        tokens += result.input_tokens + result.output_tokens
        if count % 1000 == 0:
            samples.append((count, rss_mb()))
    read_s = time.perf_counter() - t0
    whole = [r async for r in provider.results(batch_id)]
    whole_mb = rss_mb()
    await provider.aclose()
    print(f"requests: {n}; submit: {submit_s:.2f} s ({n / submit_s:,.0f} requests/s)")
    print(f"results streamed: {count} lines in {read_s:.2f} s ({count / read_s:,.0f} lines/s), tokens {tokens}")
    print("RSS while streaming (lines read: MB): " + ", ".join(f"{c}: {mb:.1f}" for c, mb in samples))
    print(f"RSS growth while streaming: {max(mb for _, mb in samples) - base:+.1f} MB; "
          f"after loading all {len(whole)} results into a list: {whole_mb - base:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "agentic_batch.testing.anthropic_server", "--pad", "2000",
                               "--batch-seconds", "1"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        asyncio.run(run(url, args.requests))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
