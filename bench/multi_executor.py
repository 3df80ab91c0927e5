"""Units/s with a no-op `python` worker for 1, 2 and 4 executors on PostgreSQL, and 1 on SQLite.

Each run creates a fresh job (default 10,000 units, concurrency 32 per executor, a no-op that sleeps
2 ms so the claim/ack path is exercised rather than a pure spin), starts it with `--executors N`
(`abp start JOB --skip-test --executors N`: real detached executors, several on PostgreSQL) and times
from start until the job is COMPLETED.

Run (from the repository root, with the venv's python; PostgreSQL at ABP_TEST_POSTGRES_URL or --pg):
    python bench/multi_executor.py
    python bench/multi_executor.py --units 20000 --pg postgresql+psycopg://postgres@127.0.0.1:5432/test

Each PostgreSQL run uses its own schema (dropped afterwards); SQLite runs use a throwaway ABP_HOME.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def run_one(units: int, concurrency: int, executors: int, pg_url: str | None, sleep_s: float) -> dict:
    with c.temp_home() as tmp, c.pg_store(pg_url):
        source = c.write_jsonl(tmp / "items.jsonl", units)
        noop = c.write_noop(tmp, sleep_s=sleep_s)
        job_id, _ = c.create_job("--name", "bench-multi", "--jsonl", str(source), "--key", "i", "--worker",
                                 "python", "--function", f"{noop}:anoop", "--concurrency", str(concurrency),
                                 cwd=tmp)
        orch = c.orchestrator()
        t0 = time.perf_counter()
        c.abp("start", str(job_id), "--skip-test", "--executors", str(executors), cwd=tmp)
        job = c.wait_final(orch, job_id, poll=0.2)
        wall = time.perf_counter() - t0
        status = orch.status(job_id)
        orch.store.close()
        assert job.status == "COMPLETED" and status.completed == units, status
        return {"store": "postgresql" if pg_url else "sqlite", "executors": executors, "units": units,
                "wall_s": wall, "units_per_s": units / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sleep", type=float, default=0.002, help="seconds each no-op unit sleeps")
    parser.add_argument("--pg", default=os.environ.get("ABP_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: ABP_TEST_POSTGRES_URL)")
    args = parser.parse_args()
    if not args.pg:
        raise SystemExit("give --pg URL or set ABP_TEST_POSTGRES_URL")
    print(f"# multi-executor throughput, {datetime.date.today()}, {c.machine()}")
    print(f"# {args.units} units, concurrency {args.concurrency} per executor, no-op sleeping {args.sleep}s")
    rows = [run_one(args.units, args.concurrency, 1, None, args.sleep)]
    for n in (1, 2, 4):
        rows.append(run_one(args.units, args.concurrency, n, args.pg, args.sleep))
    print(f"{'store':<11} {'executors':>9} {'wall s':>8} {'units/s':>9}")
    for r in rows:
        print(f"{r['store']:<11} {r['executors']:>9} {r['wall_s']:>8.2f} {r['units_per_s']:>9.0f}")


if __name__ == "__main__":
    main()
