"""`--batch-api` end to end: 10,000 units through the scripted OpenAI Files + Batches server, or (with
`--provider anthropic`) the scripted Anthropic Message Batches server.

What it measures, for one job of N units (default 10,000) with `--batch-api` on the `openai` (or
`anthropic`) worker:
- units/s end to end: from the executor's start to the job COMPLETED (packing, upload, the server's
  accelerated batch life of ~0.5 s, polling, reading the results file, applying every result);
- store writes per unit: every INSERT/UPDATE/DELETE statement and every write transaction the
  executor's store ran (a SQLAlchemy event listener on its engine), divided by N;
- the executor's RSS while it ingests the 10,000-line results file (each answer padded to ~2 KB, so
  the file is ~25 MB): sampled every 50 ms and split by phase (before the batch ended / while its
  results were applied); flat means the file is streamed and applied in chunks, never held whole;
- cost: the job's recorded cost against the same tokens at the online price (must be 50%).

The executor runs in this process (the real `Executor`, foreground), so its engine can be watched;
the scripted server runs in its own process (`python -m agentic_batch.testing.openai_batches`, or
`agentic_batch.testing.anthropic_server`), so its memory is not counted. SQLite store under a throwaway ABP_HOME.

Run (from the repository root, with the venv's python):
    python bench/batch_api.py                       # 10,000 units, one batch
    python bench/batch_api.py --units 10000 --batch-size 2500
    python bench/batch_api.py --provider anthropic
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

#: The model priced for each provider, and the command of its scripted server (0.5 s of batch life).
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
SERVERS = {"openai": ["agentic_batch.testing.openai_batches", "--in-progress", "0.5"],
           "anthropic": ["agentic_batch.testing.anthropic_server", "--batch-seconds", "0.5"]}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--pad", type=int, default=2000, help="characters of padding per answer")
    ap.add_argument("--provider", choices=sorted(MODELS), default="openai")
    args = ap.parse_args()
    print(f"batch_api ({args.provider}): {args.units:,} units, batch size {args.batch_size or 'provider limit'}, "
          f"answers padded to ~{args.pad} chars — {c.machine()}, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    server = subprocess.Popen([sys.executable, "-m", *SERVERS[args.provider], "--pad", str(args.pad)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    try:
        with c.temp_home() as tmp:
            run(tmp, url, args)
    finally:
        server.terminate()
        print(f"  server: {server.communicate(timeout=30)[0].strip()}")


def run(tmp: Path, url: str, args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    from agentic_batch.engine.executor import Executor
    from agentic_batch.workers.pricing import Pricing

    source = tmp / "items.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"item {i}"}) + "\n" for i in range(args.units)))
    orch = c.orchestrator()
    options = {"name": "bench-batch-api", "source": {"kind": "jsonl", "path": str(source), "key": "id"},
               "prompt": "Summarise {{ text }}", "worker": args.provider,
               "worker_options": {"model": MODELS[args.provider], "base_url": url}, "batch_api": True,
               "batch_poll_s": 0.2}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    created = orch.create(options, cwd=tmp)
    job_id = created.job_id
    orch.store.jobs.update_job(job_id, expect=["CREATED"], status="RUNNING", started_at=time.time())
    executor = Executor(job_id, store=orch.store, settings=orch.settings, track_processes=False)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    logging.getLogger("httpx").setLevel(logging.WARNING)

    writes = {"statements": 0, "transactions": 0}

    @sa.event.listens_for(executor.store.database.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes["statements"] += len(parameters) if executemany and isinstance(parameters, (list, tuple)) else 1
            conn.info["abp_wrote"] = True

    @sa.event.listens_for(executor.store.database.engine, "commit")
    def _commit(conn):  # type: ignore[no-untyped-def]
        if conn.info.pop("abp_wrote", False):  # a transaction that wrote something
            writes["transactions"] += 1

    samples: list[tuple[float, str, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rows = orch.store.batches.list_batches(job_id)
            phase = "ingest" if any(r.state == "ended" for r in rows) else (
                "waiting" if rows and all(r.provider_id for r in rows) else "packing")
            samples.append((time.perf_counter(), phase, rss_mb()))
            done.wait(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    base = rss_mb()
    watcher.start()
    t0 = time.perf_counter()
    code = executor.run()
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    status = orch.store.jobs.get_job(job_id).status
    if code != 0 or status != "COMPLETED":
        raise SystemExit(f"executor exited {code}, job {status}")
    n = args.units
    totals = orch.store.units.unit_totals(job_id)
    online = Pricing(MODELS[args.provider]).cost(int(totals["tokens_in"]), int(totals["tokens_out"]))
    batches = orch.store.batches.list_batches(job_id)
    events = c.query_one("SELECT count(*) FROM events WHERE job_id = ?", job_id)[0]
    print(f"  {len(batches)} batch(es); executor run {wall:.2f} s: {n / wall:,.0f} units/s end to end")
    print(f"  store writes: {writes['statements'] / n:.2f} row writes/unit ({writes['statements']:,}), "
          f"{writes['transactions']:,} write transactions ({writes['transactions'] / n:.4f}/unit); "
          f"{events / n:.1f} events/unit")
    for phase in ("packing", "waiting", "ingest"):
        values = [v for _, p, v in samples if p == phase]
        if values:
            print(f"  RSS while {phase}: {min(values):.1f}–{max(values):.1f} MB ({len(values)} samples)")
    print(f"  RSS before the run {base:.1f} MB, peak {max(v for _, _, v in samples):.1f} MB")
    print(f"  cost recorded ${totals['cost_usd']:.6f} for {int(totals['tokens_in']):,} in / "
          f"{int(totals['tokens_out']):,} out tokens; online price ${online:.6f}: "
          f"{100 * totals['cost_usd'] / online:.1f}% of online")
    orch.store.close()


if __name__ == "__main__":
    main()
