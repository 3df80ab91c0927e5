"""Where `abp create` (100,000 items) and `abp results --format csv` (500,000 units) spend their time.

Issue 16, goal 5 asks for create ≤ 2 s and export ≤ 5 s; bench/big_jobs.py measures them. This runs
each command once, whole process, under cProfile (`python -m cProfile -o ...`, so imports, the store's
opening and the interpreter's exit are all in), and prints the profile's self time grouped by where
the code lives: this package (per module), SQLAlchemy, the sqlite3 / psycopg driver calls, the JSON
and CSV codecs, Jinja2, pydantic, imports, and the rest of the standard library. cProfile slows
Python-level code more than C calls, so read the shares, not the totals, and the wall time printed
next to them (a second run without the profiler). Each is followed by its floor: sqlite3 alone
inserting rows like create's into the same tables with the same indexes, and Python's C csv writer
alone writing rows shaped like the export's from memory.

    python bench/big_jobs_profile.py                         # 100,000 to create, 500,000 to export
    python bench/big_jobs_profile.py --create 20000 --export 100000

Uses a throwaway ABP_HOME; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TREE = BENCH.parent
sys.path.insert(0, str(BENCH))

#: (label, test on the profile's file name or function name), first match wins.
GROUPS = (
    ("imports (importlib, module bodies, class and bytecode building)",
     lambda f, n: "<frozen importlib" in f or n == "<module>"
     or any(k in n for k in ("builtins.compile", "marshal.loads", "builtins.exec", "__build_class__"))),
    ("sqlite3 driver (C calls)", lambda f, n: "sqlite3" in n or "sqlite3" in f),
    ("psycopg / libpq", lambda f, n: "psycopg" in f or "libpq" in f),
    ("SQLAlchemy", lambda f, n: "sqlalchemy" in f),
    ("JSON codec (json, _json, abp's jsontext)", lambda f, n: "/json/" in f or "jsontext" in f or "_json" in n),
    ("CSV writer", lambda f, n: "_csv" in n or "/csv.py" in f),
    ("Jinja2 (prompt rendering)", lambda f, n: "jinja2" in f or "<template>" in f),
    ("pydantic", lambda f, n: "pydantic" in f),
    ("file and socket I/O", lambda f, n: any(k in n for k in ("'write' of", "'read' of", "'readline'", "'flush'",
                                                               "'recv", "'send", "posix."))),
)


REST = "standard library and the rest"


def _group(path: str, name: str) -> str:
    for label, test in GROUPS:
        if test(path, name):
            return label
    if "agentic_batch/" in path:
        return "abp: " + path.split("agentic_batch/", 1)[1]
    return REST


def summarise(profile: Path, top: int) -> list[tuple[str, float]]:
    stats = pstats.Stats(str(profile))
    by: dict[str, float] = defaultdict(float)
    rest: dict[str, float] = defaultdict(float)
    for (path, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        group = _group(path, name)
        by[group] += tottime
        if group == REST:
            rest[f"{name} ({path.rsplit('/', 1)[-1]}:{line})"] += tottime
    total = sum(by.values())
    rows = sorted(by.items(), key=lambda kv: -kv[1])[:top]
    print(f"  profile total {total:.2f} s of self time")
    for label, seconds in rows:
        print(f"  {seconds:7.2f} s  {100 * seconds / total:5.1f}%  {label}")
    print(f"  of which the largest in {REST!r}:")
    for label, seconds in sorted(rest.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {seconds:7.2f} s  {100 * seconds / total:5.1f}%    {label}")
    return rows


def item(i: int) -> str:
    """Item i of the job to create, as its JSONL line (also what the sqlite3 floor stores as payload)."""
    return json.dumps({"title": f"Item number {i}", "body": "lorem ipsum " * 8, "n": i})


def run(argv: list[str], env: dict[str, str], cwd: Path, profile: Path | None) -> float:
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    t0 = time.perf_counter()
    subprocess.run([*prefix, "-m", "agentic_batch", *argv], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sqlite_floor(store: Path, n: int) -> tuple[float, float]:
    """sqlite3 alone: n rows like `abp create`'s (a JSON payload, a rendered prompt and its SHA-256)
    built in Python, then inserted with one executemany into a fresh copy of the store's `jobs` and
    `units` tables, every index included. (seconds building, seconds inserting)"""
    import hashlib
    import sqlite3

    with sqlite3.connect(store) as source:
        ddl = [row[0] for row in source.execute("SELECT sql FROM sqlite_master WHERE tbl_name IN ('jobs', 'units') "
                                                "AND sql IS NOT NULL ORDER BY type = 'index'")]
    path = store.with_name("floor.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in ddl:
        db.execute(statement)
    t0 = time.perf_counter()
    rows = []
    for i in range(n):
        prompt = f"Summarise Item number {i}"
        rows.append((1, i, i + 1, str(i), item(i), prompt, "PENDING", hashlib.sha256(prompt.encode()).hexdigest()))
    built = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO units (job_id, seq, number, key, payload, prompt, status, fingerprint) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    done = time.perf_counter()
    db.close()
    path.unlink()
    return built - t0, done - built


def csv_floor(n: int, out: Path) -> float:
    """Python's C csv writer alone: n rows shaped like the export's (17 cells, half of them a completed
    unit with an output, a cost and `data` fields), already in memory, written to a file. (seconds)"""
    import csv

    rows = []
    for i in range(n):
        done = i % 2 == 0
        rows.append([i + 1, f"item-{i:07d}", f"Item number {i}", "lorem ipsum dolor sit amet " * 8, i,
                     "COMPLETED" if done else "PENDING",
                     "a summary of the item, a sentence or two long. " * 3 if done else None, None, None,
                     0.00028 if done else 0.0, 812 if done else 0, 95 if done else 0, 1 if done else 0, None, None,
                     "ok" if done else None, 0.5 if done else None])
    t0 = time.perf_counter()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for start in range(0, n, 1000):
            writer.writerows(rows[start:start + 1000])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--create", type=int, default=100_000, help="items to create a job from")
    ap.add_argument("--export", type=int, default=500_000, help="units of the job to export")
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="abp-bigprof-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "ABP_HOME": str(tmp / "home"), "PYTHONPATH": str(TREE)}
        os.environ.update(ABP_HOME=env["ABP_HOME"])
        items = tmp / "items.jsonl"
        with items.open("w") as out:
            for i in range(args.create):
                out.write(item(i) + "\n")
        create = ["create", "--name", "big", "--jsonl", str(items), "--command", "true",
                  "--prompt", "Summarise {{ title }}", "--json"]
        run(create, env, tmp, None)  # the store exists and is migrated, as for a user's second job
        wall = run(create, env, tmp, None)
        print(f"abp create, {args.create:,} items: {wall:.2f} s wall without the profiler")
        summarise_run = tmp / "create.prof"
        run(create, env, tmp, summarise_run)
        summarise(summarise_run, args.top)
        build, insert = sqlite_floor(tmp / "home" / "batch.db", args.create)
        print(f"floor: sqlite3 alone, {args.create:,} such rows built in {build:.2f} s and inserted into the units "
              f"table (its indexes too) in {insert:.2f} s: {build + insert:.2f} s")

        import export_results

        _orch, job_id = export_results.build_job(args.export, tmp)
        export = ["results", str(job_id), "--format", "csv", "-o", str(tmp / "out.csv")]
        wall = run(export, env, tmp, None)
        size = (tmp / "out.csv").stat().st_size / 2**20
        print(f"abp results --format csv, {args.export:,} units ({size:.0f} MB): {wall:.2f} s wall without "
              "the profiler")
        run(export, env, tmp, tmp / "export.prof")
        summarise(tmp / "export.prof", args.top)
        floor = csv_floor(args.export, tmp / "floor.csv")
        size = (tmp / "floor.csv").stat().st_size / 2**20
        print(f"floor: csv.writer alone, {args.export:,} such rows from memory ({size:.0f} MB): {floor:.2f} s")


if __name__ == "__main__":
    main()
