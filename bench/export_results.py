"""Store reads, time and memory of `abp results --format csv` on a large job.

A CSV header is the union of every row's fields, known only after the last row. The export used to
read the job twice (once for the column names, once for the rows): 2N unit reads for N units. It now
reads once and spools the rows to a temporary file. This bench prints both figures for the same job:
  * "two-pass (before)": the former algorithm, rebuilt here from the same row function;
  * "one pass (now)": `agentic_batch.results.iter_export(..., "csv")`, what the CLI and REST stream;
  * jsonl, for scale (one pass, no header).
Unit reads are counted where they happen (the store's `iter_units`), statements by an SQLAlchemy
event on the store's engine; peak memory by tracemalloc (Python allocations only, in a second,
untimed run).

Run (from the repository root, with the venv's python):
    python bench/export_results.py                  # 20,000 units
    python bench/export_results.py --units 100000
Uses a throwaway ABP_HOME; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c


def two_pass_csv(store: Any, job_id: int) -> Iterator[str]:
    """The CSV export as it was before the single pass (kept here as the baseline)."""
    from agentic_batch.results import _cell, iter_rows

    seen: dict[str, None] = {}
    for row in iter_rows(store, job_id):
        for name in row:
            seen.setdefault(name, None)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(seen), extrasaction="ignore")
    writer.writeheader()
    for row in iter_rows(store, job_id):
        writer.writerow({k: _cell(v) for k, v in row.items()})
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def build_job(n: int, workdir: Path) -> tuple[Any, int]:
    """A real job, then n units in bulk; half completed with an output, a cost and `data` fields."""
    import sqlalchemy as sa

    from agentic_batch.store import NewUnit
    from agentic_batch.store.schema import units

    (workdir / "one.jsonl").write_text('{"title": "first"}\n')
    orch = c.orchestrator()
    job_id = orch.create({"name": "bench-export", "source": {"kind": "jsonl", "path": "one.jsonl"},
                          "worker": "command", "worker_options": {"command": "echo {{ title }}"}}, cwd=workdir).job_id
    for start in range(1, n, 10_000):
        orch.store.units.insert_units(job_id, [NewUnit(seq=i, key=f"item-{i:07d}", payload={
            "title": f"Item number {i}", "body": "lorem ipsum dolor sit amet " * 8, "n": i})
            for i in range(start, min(start + 10_000, n))])
    with orch.store.database.write() as conn:
        conn.execute(sa.update(units).where(units.c.job_id == job_id, units.c.seq % 2 == 0).values(
            status="COMPLETED", output="a summary of the item, a sentence or two long. " * 3,
            cost_usd=0.0001 + 0.00018, tokens_in=812, tokens_out=95, data={"label": "ok", "score": 0.5}))
    return orch, job_id


def measure(label: str, make: Callable[[], Iterable[str]], orch: Any, rows: list) -> None:
    import sqlalchemy as sa

    store = orch.store
    reads = [0]
    statements = [0]
    original = store.units.iter_units

    def counting_iter_units(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for unit in original(*args, **kwargs):
            reads[0] += 1
            yield unit

    def on_execute(conn, cursor, statement, *rest) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM units" in statement:
            statements[0] += 1

    store.units.iter_units = counting_iter_units
    sa.event.listen(store.database.engine, "before_cursor_execute", on_execute)
    t0 = time.perf_counter()
    size = 0
    try:
        for chunk in make():
            size += len(chunk)
        seconds = time.perf_counter() - t0
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", on_execute)
        store.units.iter_units = original
    tracemalloc.start()  # a second run: tracemalloc slows Python down, so it is not in the timed one
    try:
        for _ in make():
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows.append((label, reads[0], statements[0], seconds, peak / 2**20, size / 2**20))
    print(f"  {label:<20} {reads[0]:>9,} unit reads {statements[0]:>5} SELECTs {seconds:7.2f} s "
          f"peak {peak / 2**20:6.1f} MiB  output {size / 2**20:6.1f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    args = ap.parse_args()
    n = args.units
    print(f"export_results: {n:,} units — {c.machine()}, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    from agentic_batch.results import iter_export

    with c.temp_home() as workdir:
        orch, job_id = build_job(n, workdir)
        rows: list = []
        measure("csv two-pass (before)", lambda: two_pass_csv(orch.store, job_id), orch, rows)
        measure("csv one pass (now)", lambda: iter_export(orch.store, job_id, "csv"), orch, rows)
        measure("jsonl", lambda: iter_export(orch.store, job_id, "jsonl"), orch, rows)
        same = "".join(two_pass_csv(orch.store, job_id)) == "".join(iter_export(orch.store, job_id, "csv"))
        print(f"  one-pass CSV identical to the two-pass CSV: {same}")
        orch.store.close()
    print("\n| export | unit reads | SELECTs on units | seconds | peak MiB (Python) | output MiB |\n"
          "|---|---:|---:|---:|---:|---:|")
    for label, reads, statements, seconds, peak, size in rows:
        print(f"| {label} | {reads:,} | {statements} | {seconds:.2f} | {peak:.1f} | {size:.1f} |")


if __name__ == "__main__":
    main()
