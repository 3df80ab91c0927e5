"""The result cache: a job re-run after editing its prompt so that 10% of rendered prompts change.

What it does, on SQLite and (with a PostgreSQL URL) on PostgreSQL, for N units (default 10,000):
  1. job A (`--cache`, a no-op `python` worker, prompt "Summarise {{ title }}: {{ body }}") runs to the
     end through the real detached executor: it fills the cache.
  2. job B, the same source with the prompt edited so that it renders differently for one item in ten
     (`{% if i % 10 == 0 %}...`): the cache pass it runs before starting (fingerprint every pending
     unit, look the fingerprints up across jobs, complete the hits) is timed alone, then B is started
     and run to the end. Expected: 90% cached, the rest run.
  3. job A again, edited the same way in place (`edit_prompt` on the COMPLETED job) and retried: the
     re-check of its completed units (which prompts changed) is timed; 90% stay, 10% run again.
Reported: the cache lookup per unit (the whole pass / N; must stay under 1 ms), split into the
fingerprinting (render + hash, no store) and the store's share, and the counts.

Run (from the repository root, with the venv's python):
    python bench/cache.py                                   # 10,000 units, SQLite
    python bench/cache.py --units 20000 --pg postgresql+psycopg://postgres@127.0.0.1:5432/test

Uses a throwaway ABP_HOME (and, on PostgreSQL, a throwaway schema); nothing else is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

PROMPT = "Summarise {{ title }}: {{ body }}"
EDITED = "Summarise {{ title }}: {{ body }}{% if i % 10 == 0 %} (in one line){% endif %}"


@contextlib.contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server at `base`, dropped afterwards."""
    import sqlalchemy as sa

    schema = f"abp_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def fingerprint_only(orch, job_id: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds to fingerprint every unit of the job without the store's writes (render + hash)."""
    from agentic_batch.service.fingerprints import JobFingerprint

    job = orch.store.jobs.get_job(job_id)
    records = list(orch.store.units.iter_units(job_id))
    t0 = time.perf_counter()
    fingerprint = JobFingerprint(job)
    for unit in records:
        fingerprint.unit(unit)
    return time.perf_counter() - t0


def run(label: str, n: int, data: Path, fn: str) -> None:
    from agentic_batch.service.cache import apply_cache

    orch = c.orchestrator()
    source = {"kind": "jsonl", "path": str(data / "items.jsonl"), "key": "i"}
    spec = {"name": "bench-cache", "source": source, "worker": "python", "worker_options": {"function": fn},
            "prompt": PROMPT, "cache": True, "concurrency": 16}
    first = orch.create(spec, cwd=data).job_id
    t0 = time.perf_counter()
    plan = orch.start(first, skip_test=True).plan
    fill_pass = time.perf_counter() - t0
    c.wait_final(orch, first)
    print(f"  {label}: job A ran {plan.to_run:,} units (start incl. the cache pass and the spawn: {fill_pass:.2f} s)")

    second = orch.create({**spec, "prompt": EDITED}, cwd=data).job_id
    job = orch.store.jobs.get_job(second)
    t0 = time.perf_counter()
    cached = apply_cache(orch.store, job)
    lookup = time.perf_counter() - t0
    render = fingerprint_only(orch, second)
    started = orch.start(second, skip_test=True).plan
    final = c.wait_final(orch, second)
    status = orch.status(second)
    print(f"  {label}: job B {cached:,} of {n:,} cached ({100 * cached / n:.1f}%), {started.to_run:,} to run, "
          f"{final.status} with {status.completed:,} completed")
    print(f"  {label}: cache pass {lookup:.2f} s = {1000 * lookup / n:.3f} ms/unit "
          f"(fingerprinting alone {1000 * render / n:.3f} ms/unit, store {1000 * (lookup - render) / n:.3f} ms/unit)")

    orch.edit_prompt(first, EDITED)
    t0 = time.perf_counter()
    retried = orch.retry(first)
    recheck = time.perf_counter() - t0
    c.wait_final(orch, first)
    print(f"  {label}: job A edited in place and retried: {retried.plan.unchanged:,} unchanged, "
          f"{retried.retried:,} re-run (the whole retry, re-check included: {recheck:.2f} s = "
          f"{1000 * recheck / n:.3f} ms/unit)")
    orch.store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--pg", default=os.environ.get("ABP_TEST_POSTGRES_URL"),
                    help="PostgreSQL URL to measure on too (default: ABP_TEST_POSTGRES_URL)")
    args = ap.parse_args()
    print(f"cache: {args.units:,} units, 10% of prompts edited — {c.machine()}, "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}")
    with c.temp_home() as data:
        c.write_jsonl(data / "items.jsonl", args.units)
        fn = f"{c.write_noop(data)}:noop"
        run("sqlite", args.units, data, fn)
        if args.pg:
            with pg_schema(args.pg) as url:
                os.environ["ABP_DB_URL"] = url
                run("postgresql", args.units, data, fn)


if __name__ == "__main__":
    main()
