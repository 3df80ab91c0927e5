"""The executor's store path alone, per unit: claim 64 units, then repeatedly write their 128 events
(`start`, `end`) and 64 results and claim the freed slots in the same transaction (`Store.write_batch`,
what the pool does each tick), until the job is done. No event loop, no worker: the figure is the
store thread's CPU per unit (process CPU time), the part of `bench/peers/dispatch.py` that the store
side decides.

    python bench/store_path.py [--units 20000] [--rounds 3] [--pg URL]

Uses a throwaway ABP_HOME (and, with --pg, a schema of its own, dropped after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

CONCURRENCY = 64


def one_run(units: int, pg_url: str | None, concurrency: int = CONCURRENCY) -> tuple[float, float]:
    """(wall s, CPU s) of the store path over `units` units."""
    from agentic_batch.store import NewEvent, UnitResult

    with c.temp_home() as tmp, c.pg_store(pg_url):
        noop = c.write_noop(tmp)
        source = c.write_jsonl(tmp / "items.jsonl", units)
        orch = c.orchestrator()
        job_id = orch.create({"name": "bench-store-path", "source": {"kind": "jsonl", "path": str(source)},
                              "worker": "python", "worker_options": {"function": f"{noop}:anoop"},
                              "concurrency": concurrency}, cwd=tmp).job_id
        store = orch.store
        store.jobs.update_job(job_id, expect=["CREATED"], status="RUNNING", started_at=time.time())
        owner = "bench-store-path"
        t0, cpu0 = time.perf_counter(), time.process_time()
        claimed = store.units.claim_units(owner, [job_id], concurrency, 600)
        done = 0
        while claimed:
            now = time.time()
            events = [NewEvent(job_id, u.id, u.attempt, seq, now, kind, data) for u in claimed
                      for seq, (kind, data) in enumerate((("start", {"attempt": u.attempt, "worker": "python",
                                                                     "executor": owner}),
                                                          ("end", {"duration_s": 0.0, "cost_usd": None})))]
            results = [UnitResult(unit_id=u.id, attempt=u.attempt, status="COMPLETED", output=None,
                                  finished_at=now) for u in claimed]
            applied, claimed = store.write_batch(
                owner, events, results, [],
                lambda: store.units.claim_units(owner, [job_id], concurrency, 600), job_id)
            assert len(applied) == len(results)
            done += len(applied)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert done == units, done
        store.close()
        return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", help="PostgreSQL URL (default: SQLite)")
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="units per claim and per write")
    args = ap.parse_args()
    runs = [one_run(args.units, args.pg, args.concurrency) for _ in range(args.rounds)]
    cpus = [cpu / args.units * 1e6 for _, cpu in runs]
    walls = [args.units / wall for wall, _ in runs]
    print(f"store path ({'PostgreSQL' if args.pg else 'SQLite'}), {args.units:,} units, {args.concurrency} a batch: "
          "CPU per unit "
          f"median {statistics.median(cpus):.0f} us (rounds {', '.join(f'{x:.0f}' for x in cpus)}), "
          f"{statistics.median(walls):,.0f} units/s")


if __name__ == "__main__":
    main()
