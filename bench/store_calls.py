"""Store round trips per unit in the executor: how often it claims, writes results and events, and how
big those batches are. Explains the throughput figure (each store call is a write transaction on the
executor's single store thread).

What it does: creates a job over N units (default 20,000) with the no-op async `python` worker at
concurrency 64, sets it RUNNING the way `abp start --skip-test` does, and runs the real `Executor`
in this process (foreground, not detached) with the store's methods wrapped to count calls, rows
and seconds spent in each. Optionally under cProfile (`--cprofile FILE`; it profiles the event-loop
thread only, the store thread is not seen by cProfile; use throughput.py --py-spy for both).

Run (from the repository root, with the venv's python):
    python bench/store_calls.py [--units 20000] [--concurrency 64] [--cprofile /tmp/exec.prof]

Uses a throwaway ABP_HOME; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

#: The store methods counted, by the query object (`store.units`, ...) that holds them.
WATCHED = {"claim_units": "units", "apply_results": "units", "append_events": "events", "append_logs": "logs",
           "renew_leases": "units", "beat_executor": "executors", "get_job": "jobs", "count_units": "units",
           "next_not_before": "units"}
BATCHED = ("apply_results", "append_events", "append_logs")  # their list argument is rows written


def wrap(store, stats: dict) -> None:
    """Count calls, rows in and out, and seconds per store method (on this store's query objects only)."""
    for name, holder in WATCHED.items():
        queries = getattr(store, holder)
        original = getattr(queries, name)

        def counted(*args, _name=name, _fn=original, **kwargs):
            t0 = time.perf_counter()
            result = _fn(*args, **kwargs)
            entry = stats[_name]
            entry["calls"] += 1
            entry["seconds"] += time.perf_counter() - t0
            batch = next((a for a in args if isinstance(a, list)), None) if _name in BATCHED else None
            entry["rows_in"] += len(batch) if batch is not None else 0
            entry["rows_out"] += len(result) if isinstance(result, list) else 0
            return result

        setattr(queries, name, functools.wraps(original)(counted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--cprofile", type=Path, help="also profile the executor's loop thread into this file")
    args = ap.parse_args()
    print(f"store_calls: {args.units:,} units, concurrency {args.concurrency}, anoop — {c.machine()}, "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}")
    stats: dict = defaultdict(lambda: {"calls": 0, "rows_in": 0, "rows_out": 0, "seconds": 0.0})
    with c.temp_home() as tmp:
        noop = c.write_noop(tmp)
        source = c.write_jsonl(tmp / "items.jsonl", args.units)
        orch = c.orchestrator()
        created = orch.create({"name": "bench-store-calls", "source": {"kind": "jsonl", "path": str(source)},
                               "worker": "python", "worker_options": {"function": f"{noop}:anoop"},
                               "concurrency": args.concurrency}, cwd=tmp)
        orch.store.jobs.update_job(created.job_id, expect=["CREATED"], status="RUNNING", started_at=time.time())
        from agentic_batch.engine.executor import Executor

        executor = Executor(created.job_id, store=orch.store, settings=orch.settings)
        wrap(executor.store, stats)
        profiler = cProfile.Profile() if args.cprofile else None
        t0 = time.perf_counter()
        code = profiler.runcall(executor.run) if profiler else executor.run()
        wall = time.perf_counter() - t0
        status = orch.store.jobs.get_job(created.job_id).status
    if code != 0 or status != "COMPLETED":
        raise SystemExit(f"executor exited {code}, job {status}")
    n = args.units
    print(f"  executor run: {wall:.2f} s, {n / wall:,.0f} units/s (in-process, foreground)\n")
    print("| store call | calls | calls/unit | rows in | rows out | avg rows/call | ms/row | store-thread s "
          "| % of wall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, e in sorted(stats.items(), key=lambda kv: -kv[1]["seconds"]):
        rows = e["rows_in"] or e["rows_out"]
        per_row = f"{1000 * e['seconds'] / rows:.3f}" if rows else "—"
        print(f"| {name} | {e['calls']:,} | {e['calls'] / n:.3f} | {e['rows_in']:,} | {e['rows_out']:,} | "
              f"{rows / max(e['calls'], 1):.1f} | {per_row} | "
              f"{e['seconds']:.2f} | {100 * e['seconds'] / wall:.0f}% |")
    busy = sum(e["seconds"] for e in stats.values())
    print(f"\n  store thread busy {busy:.2f} s of {wall:.2f} s wall ({100 * busy / wall:.0f}%)")
    if profiler:
        profiler.dump_stats(str(args.cprofile))
        print(f"\ncProfile (event-loop thread), top 25 by cumulative time — saved to {args.cprofile}")
        pstats.Stats(str(args.cprofile)).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
