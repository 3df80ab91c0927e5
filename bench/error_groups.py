"""Grouping failed units by cause at scale: a job of N units (default 100,000), all FAILED with errors
of three causes (each message with its own numbers, paths and quoted values), grouped:
  * on read: every failed unit's error streamed from the store and normalised in Python;
  * stored: the signatures written at failure time, one indexed GROUP BY (`Orchestrator.error_summary`,
    what `abp errors`, REST, MCP and the dashboard panel call), with 3 example units per group.
Also the cost of computing one signature (paid once per failed attempt, inside the result write).

Run (from the repository root, with the venv's python):
    python bench/error_groups.py                 # 100,000 units, SQLite
    python bench/error_groups.py --units 20000
    python bench/error_groups.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/test
Uses a throwaway ABP_HOME (and, with --pg, removes its job from that database at the end); nothing
under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def cause(i: int) -> str:
    if i % 3 == 0:
        return f"cannot open '/data/batch-{i // 100}/item-{i}.json': no such file"
    if i % 3 == 1:
        return f"unit-{i} timed out after {i / 10:.1f}s waiting for lock 0x{i * 4099:x}"
    return f"KeyError: 'field_{i}'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--pg", help="a PostgreSQL store URL (default: SQLite in the throwaway home)")
    args = parser.parse_args()
    with c.temp_home() as tmp:
        import os

        import sqlalchemy as sa

        if args.pg:
            os.environ["ABP_DB_URL"] = args.pg

        from agentic_batch.error_signature import error_signature
        from agentic_batch.service import Orchestrator
        from agentic_batch.store.schema import units

        orch = Orchestrator()
        items = tmp / "items.jsonl"
        items.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(args.units)))
        job = orch.create({"name": "errors-bench", "source": {"kind": "jsonl", "path": str(items), "key": "id"},
                           "worker": "command", "worker_options": {"command": "true"}}, cwd=tmp).job_id
        t0 = time.perf_counter()
        with orch.store.database.write() as conn:
            ids = [r.id for r in conn.execute(sa.select(units.c.id, units.c.number)
                                              .where(units.c.job_id == job).order_by(units.c.number))]
            conn.execute(sa.update(units).where(units.c.id == sa.bindparam("b_id")).values(
                status="FAILED", error=sa.bindparam("b_error"), error_class="permanent",
                error_signature=sa.bindparam("b_sig")),
                [{"b_id": uid, "b_error": cause(i), "b_sig": error_signature(cause(i))} for i, uid in enumerate(ids)])
        dialect = orch.store.url.split(":")[0]
        print(f"{args.units:,} failed units written in {time.perf_counter() - t0:.1f} s ({dialect})")

        def on_read() -> dict[tuple[str | None, str | None, str | None], int]:
            groups: collections.Counter[tuple[str | None, str | None, str | None]] = collections.Counter()
            for row in orch.store.errors.failed_errors(job):
                groups[(row.error_class, row.error_kind, error_signature(row.error))] += 1
            return groups

        grouped = on_read()
        summary = orch.error_summary(job)
        assert len(grouped) == 3 and len(summary.groups) == 3, (grouped, summary)
        read_s = c.best_of(3, on_read)
        stored_s = c.best_of(5, lambda: orch.error_summary(job))
        sample = [cause(i) for i in range(10_000)]
        t0 = time.perf_counter()
        for text in sample:
            error_signature(text)
        per_sig_us = (time.perf_counter() - t0) / len(sample) * 1e6
        print(f"group on read (stream + normalise every error): {read_s * 1000:8.1f} ms")
        print(f"stored signatures (indexed GROUP BY + examples): {stored_s * 1000:8.1f} ms")
        print(f"one signature at failure time:                  {per_sig_us:8.1f} µs")
        if args.pg:
            from agentic_batch.store.schema import jobs

            with orch.store.database.write() as conn:
                conn.execute(sa.delete(units).where(units.c.job_id == job))
                conn.execute(sa.delete(jobs).where(jobs.c.id == job))
        orch.store.close()


if __name__ == "__main__":
    main()
