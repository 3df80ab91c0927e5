"""Latency of the dashboard's API calls on a 100,000-unit job while its executor is writing.

What it measures: a job of N units (default 100,000) with a no-op `python` worker that sleeps a
little (default 10 ms) at concurrency 32 runs in its real detached executor, so units are claimed,
finished and logged all the time. Meanwhile `abp serve` (a separate process, as users run it)
answers one client that cycles through the calls the job page makes (status, activity, the first
units page, the chart series, the logs, the page itself) and the units-table variants (sorts,
filters, a deep page, a search), sequentially, ROUNDS times. Printed: p50 / p95 / max per call in
milliseconds, and how fast the executor was finishing units meanwhile.

Run (from the repository root, with the venv's python):
    python bench/web_latency.py                    # 100,000 units, 40 rounds
    python bench/web_latency.py --units 20000 --rounds 20

Uses a throwaway ABP_HOME (SQLite store); nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def calls(job: int) -> list[tuple[str, str]]:
    units = f"/api/jobs/{job}/units"
    return [
        ("job status", f"/api/jobs/{job}"),
        ("active units", f"/api/jobs/{job}/active"),
        ("units, first page", f"{units}?limit=50"),
        ("chart series", f"/api/jobs/{job}/timeseries?buckets=60"),
        ("logs, newest", f"/api/jobs/{job}/logs?limit=50"),
        ("job page (HTML)", f"/jobs/{job}"),
        ("units by cost", f"{units}?sort=cost&order=desc&limit=50"),
        ("units by duration", f"{units}?sort=duration&order=desc&limit=50"),
        ("units completed", f"{units}?status=completed&limit=50"),
        ("units page 1,800", f"{units}?limit=50&offset=90000"),
        ("units search", f"{units}?q=item 4242&limit=50"),
        ("job list", "/api/jobs"),
        ("stats", "/api/stats"),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sleep", type=float, default=0.01, help="seconds each no-op unit sleeps")
    parser.add_argument("--rounds", type=int, default=40, help="times each call is made")
    args = parser.parse_args()

    with c.temp_home() as tmp:
        source = c.write_jsonl(tmp / "items.jsonl", args.units)
        noop = c.write_noop(tmp, sleep_s=args.sleep)
        job, created_s = c.create_job("--name", "latency", "--jsonl", str(source), "--key", "i", "--worker", "python",
                                      "--function", f"{noop}:anoop", "--concurrency", str(args.concurrency), cwd=tmp)
        print(f"created {args.units:,} units in {created_s:.1f}s; starting the executor")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "agentic_batch", "serve", "--port", str(port)], cwd=tmp,
                                  env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        orch = c.orchestrator()
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=60) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if client.get("/api/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("abp serve did not start")
                    time.sleep(0.1)
                c.abp("start", str(job), "--skip-test", cwd=tmp)
                while orch.status(job).completed < 1000:  # the executor is up and writing
                    time.sleep(0.2)
                done_before, t0 = orch.status(job).done, time.perf_counter()
                timings: dict[str, list[float]] = {name: [] for name, _ in calls(job)}
                for _ in range(args.rounds):
                    for name, path in calls(job):
                        start = time.perf_counter()
                        response = client.get(path)
                        timings[name].append((time.perf_counter() - start) * 1000)
                        if response.status_code != 200:
                            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
                status = orch.status(job)
                elapsed = time.perf_counter() - t0
                writing = (status.done - done_before) / elapsed
        finally:
            server.terminate()
            server.wait(timeout=15)
            if orch.status(job).status == "RUNNING":
                orch.stop(job)
                c.wait_final(orch, job, timeout=120)

    print(f"\n{c.machine()}; SQLite store; {args.units:,} units; executor at concurrency {args.concurrency} "
          f"finishing {writing:,.0f} units/s during the {elapsed:.0f}s of measurement "
          f"({status.done:,} of {status.total:,} done at the end)")
    print(f"{args.rounds} sequential requests per call, one client, `abp serve` in its own process\n")
    print("| call | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, values in timings.items():
        print(f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.95):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
