"""Deleting a 100,000-unit job while another job runs: how long the store is held, and what the other
job's claims see meanwhile.

Per store (SQLite always; PostgreSQL when ABP_BENCH_POSTGRES_URL or ABP_TEST_POSTGRES_URL is set, in a
schema of its own, dropped afterwards):
  * a big job: N units (default 100,000) created from a JSONL source, made COMPLETED with an output
    each, and EVENTS events per unit (default 3) written straight into the store, as a finished job has;
  * a running job: a real detached executor working through short python units (concurrency 2);
  * a probe: a thread that claims one unit of a third job and gives it back, every 20 ms, timing
    each `claim_units` call (the write transaction every executor's claim is);
  * the delete: `Orchestrator.delete` (the batched path), with the store's per-batch callback
    recording how long each transaction held the store (from when its BEGIN returned, on SQLite
    holding the write lock, to the end of its COMMIT);
  * for reference, the same job deleted the old way: one transaction per table family (`DELETE ...
    WHERE job_id = ?`), as before batching.
Prints max / p99 / p50 of the batch transactions, and the probe's claim latency before and during
each delete.

Run (from the repository root, with the venv's python):
    python bench/delete_big_job.py                      # 100,000 units, 3 events each
    python bench/delete_big_job.py --units 20000 --no-reference
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return (f"max {max(values) * 1000:7.1f} ms  p99 {pct(values, 0.99) * 1000:6.1f} ms  "
            f"p50 {statistics.median(values) * 1000:5.1f} ms  (n={len(values)})")


def fill_big_job(orch: Any, workdir: Path, n: int, events_per_unit: int) -> int:
    """A finished-looking job: N completed units with an output, and their events."""
    import sqlalchemy as sa

    from agentic_batch.store.schema import events, jobs, units

    source = c.write_jsonl(workdir / f"big-{uuid.uuid4().hex[:6]}.jsonl", n)
    job = orch.create({"name": "big", "source": {"kind": "jsonl", "path": str(source)}, "worker": "command",
                       "worker_options": {"command": "true"}}, cwd=workdir).job_id
    now = time.time()
    with orch.store.database.write() as conn:
        conn.execute(sa.update(units).where(units.c.job_id == job).values(
            status="COMPLETED", output="a line of output, as a command prints it\n" * 4, started_at=now - 1,
            finished_at=now, attempt=1))
        conn.execute(sa.update(jobs).where(jobs.c.id == job).values(status="COMPLETED", finished_at=now))
        ids = [r[0] for r in conn.execute(sa.select(units.c.id).where(units.c.job_id == job))]
    rows: list[dict[str, Any]] = []
    for unit_id in ids:
        for seq in range(events_per_unit):
            rows.append({"job_id": job, "unit_id": unit_id, "attempt": 1, "seq": seq, "ts": now, "kind": "stdout",
                         "data": {"text": f"line {seq} of the unit's output"}})
        if len(rows) >= 20_000:
            with orch.store.database.write() as conn:
                conn.execute(sa.insert(events), rows)
            rows = []
    if rows:
        with orch.store.database.write() as conn:
            conn.execute(sa.insert(events), rows)
    return int(job)


class Probe(threading.Thread):
    """Claims one unit of its own job and releases it, every 20 ms, timing each claim."""

    def __init__(self, orch: Any, job_id: int) -> None:
        super().__init__(daemon=True)
        self.orch, self.job_id = orch, job_id
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        store = self.orch.store
        while not self.stop.is_set():
            began = time.perf_counter()
            store.units.claim_units("probe", [self.job_id], 1, 60.0)
            self.samples.append((time.monotonic(), time.perf_counter() - began))
            store.units.release_units("probe")
            time.sleep(0.02)

    def between(self, start: float, end: float) -> list[float]:
        return [s for when, s in self.samples if start <= when <= end]


def old_delete(orch: Any, job_id: int) -> list[float]:
    """Before batching: one transaction per table family, then the job row."""
    import sqlalchemy as sa

    from agentic_batch.store.schema import events, executors, jobs, logs, units

    took = []
    for table in (events, logs, executors, units):
        began = time.perf_counter()
        with orch.store.database.write() as conn:
            conn.execute(sa.delete(table).where(table.c.job_id == job_id))
        took.append(time.perf_counter() - began)
    with orch.store.database.write() as conn:
        conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
    return took


def run_store(label: str, workdir: Path, n: int, events_per_unit: int, reference: bool) -> None:
    from agentic_batch.store.job_deletion import DeletedBatch

    orch = c.orchestrator()
    print(f"\n== {label}: {n:,} units, {events_per_unit} events each ==")
    t0 = time.perf_counter()
    big = fill_big_job(orch, workdir, n, events_per_unit)
    old = fill_big_job(orch, workdir, n, events_per_unit) if reference else None
    print(f"set-up: {time.perf_counter() - t0:.1f} s")
    noop = c.write_noop(workdir, sleep_s=0.01)
    running = orch.create({"name": "running", "source": {"kind": "jsonl", "path": str(c.write_jsonl(
        workdir / "running.jsonl", 50_000))}, "worker": "python", "worker_options": {"function": f"{noop}:noop"},
        "concurrency": 2}, cwd=workdir).job_id
    probe_job = orch.create({"name": "probe", "source": {"kind": "jsonl", "path": str(c.write_jsonl(
        workdir / "probe.jsonl", 100))}, "worker": "command", "worker_options": {"command": "true"}},
        cwd=workdir).job_id
    orch.start(running, skip_test=True)
    probe = Probe(orch, probe_job)
    probe.start()
    time.sleep(3.0)
    base_end = time.monotonic()
    baseline = probe.between(base_end - 3.0, base_end)

    batches: list[DeletedBatch] = []
    orch.store.jobs.delete_job = lambda job_id: orch.store.deletion.delete_job(job_id, on_batch=batches.append)
    began, t_began = time.monotonic(), time.perf_counter()
    result = orch.delete([big]).jobs[0]
    seconds = time.perf_counter() - t_began
    during = probe.between(began, time.monotonic())
    done_before = orch.status(running).completed
    print(f"claim latency, idle store + running job: {ms(baseline)}")
    print(f"batched delete: {result.rows:,} rows in {seconds:.1f} s, {len(batches)} transactions")
    print(f"  transaction (write-lock hold):  {ms([b.seconds for b in batches])}")
    print(f"  claim latency during it:        {ms(during)}")
    if old is not None:
        time.sleep(1.0)
        began = time.monotonic()
        took = old_delete(orch, old)
        during_old = probe.between(began, time.monotonic())
        print(f"one transaction per table (before): {sum(took):.1f} s, longest {max(took) * 1000:.0f} ms")
        print(f"  claim latency during it:        {ms(during_old)}")
    probe.stop.set()
    probe.join()
    orch.cancel(running)
    print(f"the running job completed {done_before:,} units meanwhile (and kept going)")
    orch.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=3, help="events per unit")
    parser.add_argument("--no-reference", action="store_true", help="skip the one-transaction delete")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    print(f"delete_big_job: {c.machine()}")
    if args.store in ("sqlite", "both"):
        with c.temp_home() as tmp:
            run_store("SQLite", tmp, args.units, args.events, not args.no_reference)
    pg = os.environ.get("ABP_BENCH_POSTGRES_URL") or os.environ.get("ABP_TEST_POSTGRES_URL")
    if args.store in ("postgresql", "both") and pg:
        import sqlalchemy as sa

        schema = f"abp_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(pg)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            with c.temp_home() as tmp:
                sep = "&" if "?" in pg else "?"
                os.environ["ABP_DB_URL"] = f"{pg}{sep}options={quote(f'-csearch_path={schema}')}"
                try:
                    run_store("PostgreSQL", tmp, args.units, args.events, not args.no_reference)
                finally:
                    os.environ.pop("ABP_DB_URL", None)
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    elif args.store != "sqlite":
        print("\n(PostgreSQL skipped: set ABP_BENCH_POSTGRES_URL)")


if __name__ == "__main__":
    main()
