"""Peak resident memory of the detached executor as the number of units grows.

What it measures: for each size (default 1,000 and 100,000 units) a job over a JSONL source with a
no-op async `python` worker at concurrency 64 is created (in-process, through the service) and
started with `abp start JOB --skip-test`; while the real detached executor runs, /proc/<pid>/status
is polled every few milliseconds and the largest VmHWM (the kernel's high-water mark) and VmRSS seen
are kept. The executor exits when the job completes, so the last sample is taken just before it
does; VmHWM never decreases, so that sample carries the peak. The point: the peak must not grow with
the number of units (units are claimed in batches of free slots and results are written in
batches, nothing holds the whole job in memory).

Run (from the repository root, with the venv's python):
    python bench/executor_rss.py                         # 1,000 and 100,000 units
    python bench/executor_rss.py --sizes 1000 10000 100000 --sleep-ms 1

Uses a throwaway ABP_HOME per size; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def measure(units: int, concurrency: int, sleep_ms: float, poll: float, every: float) -> dict:
    with c.temp_home() as tmp:
        noop = c.write_noop(tmp, sleep_ms / 1000)
        source = c.write_jsonl(tmp / "items.jsonl", units)
        orch = c.orchestrator()
        created = orch.create({"name": f"bench-rss-{units}", "source": {"kind": "jsonl", "path": str(source)},
                               "worker": "python", "worker_options": {"function": f"{noop}:anoop"},
                               "concurrency": concurrency}, cwd=tmp)
        t0 = time.time()
        out, _ = c.abp("start", str(created.job_id), "--skip-test", "--json", cwd=tmp)
        watch = c.ProcWatch(json.loads(out)["executor"]["pid"])
        watch.sample()
        startup_mb = watch.rss_kb / 1024
        timeline, next_mark = [], time.monotonic() + every
        while watch.sample():
            if time.monotonic() >= next_mark:  # RSS against progress: growth with units done = a leak
                done = c.query_one("SELECT COUNT(*) FROM units WHERE job_id = ? AND status = 'COMPLETED'",
                                   created.job_id)[0]
                timeline.append((time.time() - t0, done, watch.last_rss_kb / 1024))
                next_mark += every
            time.sleep(poll)
        job = c.wait_final(orch, created.job_id, timeout=600)
        done = c.query_one("SELECT COUNT(*) FROM units WHERE job_id = ? AND status = 'COMPLETED'",
                           created.job_id)[0]
        if job.status != "COMPLETED" or done != units:
            raise SystemExit(f"{units} units: job ended {job.status} with {done} completed ({job.error})")
        return {"units": units, "seconds": (job.finished_at or time.time()) - t0, "startup_mb": startup_mb,
                "hwm_mb": watch.hwm_kb / 1024, "rss_mb": watch.rss_kb / 1024, "peak_mb": watch.peak_mb,
                "samples": watch.samples, "timeline": timeline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sleep-ms", type=float, default=0.0, help="make the no-op sleep this long")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="how often /proc is sampled")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between RSS-vs-progress lines")
    args = ap.parse_args()
    print(f"executor_rss: concurrency {args.concurrency}, anoop (sleep {args.sleep_ms:g} ms), poll "
          f"{args.poll_ms:g} ms — {c.machine()}, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    rows = []
    for units in args.sizes:
        row = measure(units, args.concurrency, args.sleep_ms, args.poll_ms / 1000, args.every)
        rows.append(row)
        print(f"  {units:>9,} units: run {row['seconds']:7.1f} s, RSS at start {row['startup_mb']:6.1f} MB, "
              f"peak VmHWM {row['hwm_mb']:6.1f} MB, max VmRSS {row['rss_mb']:6.1f} MB "
              f"({row['samples']} samples)",
              flush=True)
        for elapsed, done, rss in row["timeline"]:
            print(f"      t={elapsed:6.1f} s  {done:>9,} completed  VmRSS {rss:6.1f} MB")
    print("\n| units | run (s) | RSS after start (MB) | peak RSS (MB) |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['units']:,} | {row['seconds']:.1f} | {row['startup_mb']:.1f} | {row['peak_mb']:.1f} |")
    sampled = [row for row in rows if row["samples"]]
    for row in rows:
        if not row["samples"]:  # `abp start` returned after a small job's executor had finished (a loaded machine)
            print(f"{row['units']:,} units: the executor exited before the first /proc sample; no figure")
    if not sampled:
        return
    base = sampled[0]["peak_mb"]
    for row in sampled[1:]:
        print(f"peak at {row['units']:,} units vs {sampled[0]['units']:,}: {row['peak_mb'] - base:+.1f} MB "
              f"({row['peak_mb'] / base:.2f}x)")


if __name__ == "__main__":
    main()
