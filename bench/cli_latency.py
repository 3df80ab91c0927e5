"""How long `abp list`, `abp status JOB` and `abp show JOB UNIT` take on a 100,000-unit store.

A user types these dozens of times while a job runs, so each should answer like `git status`: the
goal (issue 16) is 0.2 s of wall time. What the figure is made of: interpreter start, the imports the
command needs, the store open, the queries, the printing.

The store: one job of N units (default 100,000) created through `abp create`, then given a mix of
statuses (60% COMPLETED with output, cost and tokens, 2% FAILED, 1% RUNNING, the rest PENDING), 40
events on unit 1 and 20 small jobs beside it, so the queries see what a real busy store holds. On
PostgreSQL the tables are then vacuumed and analyzed, as autovacuum would have done a minute later.

Each round runs every command once per tree, alternating (a tree is a checkout of the project: the
one this script is in, and any `--tree DIR` to compare against, e.g. `git archive OLD | tar -x -C DIR`;
each tree gets a store of its own, filled by its own CLI), and records the wall time and the CPU
time (user+sys of the child, `getrusage`). Printed: medians per command and tree, and the ratio to
the first tree.

    python bench/cli_latency.py                                   # this tree, SQLite, 100,000 units
    python bench/cli_latency.py --tree /tmp/abp-before --rounds 7 # before/after, alternating
    python bench/cli_latency.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/cli_latency.py --importtime list                 # what `abp list` imports (ms, self)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

HERE = Path(__file__).resolve().parent.parent


def commands(job_id: int, units: int) -> dict[str, list[str]]:
    return {"list": ["list"], "status": ["status", str(job_id)], "show": ["show", str(job_id), "1"],
            "status --json": ["status", str(job_id), "--json"],
            "show PENDING": ["show", str(job_id), str(units)]}  # not run yet: its prompt previewed (Jinja2)


def run_cli(tree: Path, args: list[str], cwd: Path, store_env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one `python -m agentic_batch ARGS` with `tree` first on the path (run from
    `cwd`, outside every tree: `python -m` puts the working directory before PYTHONPATH)."""
    env = {**os.environ, **store_env, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agentic_batch", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"abp {' '.join(args)} failed in {tree} ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def fill_store(units: int, tmp: Path) -> int:
    """The 100,000-unit job and its neighbours; returns the big job's id."""
    source = c.write_jsonl(tmp / "items.jsonl", units)
    small = c.write_jsonl(tmp / "small.jsonl", 10)
    for i in range(20):
        c.create_job("--name", f"small-{i}", "--jsonl", str(small), "--command", "true", cwd=tmp)
    job_id, seconds = c.create_job("--name", "big", "--jsonl", str(source), "--key", "i", "--command", "echo",
                                   "--prompt", "Summarise {{ title }}", cwd=tmp)
    print(f"created job {job_id} with {units:,} units in {seconds:.2f} s")
    import sqlalchemy as sa

    from agentic_batch.config import load_settings

    engine = sa.create_engine(load_settings().db_url)
    now = time.time()
    with engine.begin() as conn:
        done, failed, running = int(units * 0.6), int(units * 0.02), max(1, units // 100)
        conn.execute(sa.text("UPDATE jobs SET status = 'RUNNING', started_at = :t, running_since = :t "
                             "WHERE id = :j"), {"t": now - 600, "j": job_id})
        conn.execute(sa.text("UPDATE units SET status = 'COMPLETED', output = 'a summary of the item', "
                             "prompt = 'Summarise the item', "
                             "cost_usd = 0.00012, tokens_in = 120, tokens_out = 40, attempt = 1, "
                             "started_at = :t0 + seq * 0.001, finished_at = :t0 + seq * 0.001 + 0.5 "
                             "WHERE job_id = :j AND seq < :n"), {"t0": now - 600, "j": job_id, "n": done})
        conn.execute(sa.text("UPDATE units SET status = 'FAILED', error = 'HTTP 400: bad request', "
                             "prompt = 'Summarise the item', "
                             "error_class = 'permanent', attempt = 3 WHERE job_id = :j AND seq >= :a AND seq < :b"),
                     {"j": job_id, "a": done, "b": done + failed})
        conn.execute(sa.text("UPDATE units SET status = 'RUNNING', attempt = 1, started_at = :t, lease_owner = 'x', "
                             "prompt = 'Summarise it', "
                             "lease_expires_at = :t + 60 WHERE job_id = :j AND seq >= :a AND seq < :b"),
                     {"t": now, "j": job_id, "a": done + failed, "b": done + failed + running})
        unit_id = conn.execute(sa.text("SELECT id FROM units WHERE job_id = :j AND number = 1"), {"j": job_id}).scalar()
        conn.execute(sa.text("INSERT INTO events (job_id, unit_id, attempt, seq, ts, kind, data) "
                             "VALUES (:j, :u, 1, :s, :t, 'assistant', :d)"),
                     [{"j": job_id, "u": unit_id, "s": s, "t": now, "d": json.dumps({"text": f"turn {s}"})}
                      for s in range(40)])
    if engine.dialect.name == "postgresql":
        # what autovacuum does within a minute on a default server (this machine's test server runs
        # without it): statistics for the planner, and the visibility map for index-only scans
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("units", "jobs", "events"):
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    engine.dispose()
    return job_id


def show_importtime(command: str, job_id: int, units: int, cwd: Path, store_env: dict[str, str]) -> None:
    args = commands(job_id, units)[command]
    env = {**os.environ, **store_env, "PYTHONPATH": str(HERE)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentic_batch", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, check=False)
    by_top: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        top = name.strip().split(".")[0]
        by_top[top] = by_top.get(top, 0) + int(self_us)
    print(f"`abp {' '.join(args)}`: import time by top-level package (self, ms; -X importtime inflates it)")
    for top, us in sorted(by_top.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {us / 1000:7.1f}  {top}")
    print(f"  {sum(by_top.values()) / 1000:7.1f}  total")


def store_for(tree: Path, index: int, units: int, tmp: Path, pg: str | None, admin: Any) -> tuple[dict[str, str], int]:
    """A store filled by `tree`'s own CLI (an older tree cannot open a store a newer one migrated):
    its environment (ABP_HOME, ABP_DB_URL) and the big job's id."""
    env = {"ABP_HOME": str(tmp / f"home-{index}")}
    if pg:
        import sqlalchemy as sa

        schema = f"abp_bench_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in pg else "?"
        env["ABP_DB_URL"] = f"{pg}{sep}options={quote(f'-csearch_path={schema}')}"
        env["ABP_BENCH_SCHEMA"] = schema
    saved = {k: os.environ.get(k) for k in (*env, "PYTHONPATH")}
    os.environ.update(env, PYTHONPATH=str(tree))
    try:
        return env, fill_store(units, tmp)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to compare (alternated with this one)")
    parser.add_argument("--pg", help="a PostgreSQL URL: run on fresh schemas there instead of SQLite")
    parser.add_argument("--importtime", metavar="COMMAND", help="also print what COMMAND imports (list, status, show)")
    args = parser.parse_args()
    trees = [HERE, *[t.resolve() for t in args.tree]]
    admin = None
    if args.pg:
        import sqlalchemy as sa

        admin = sa.create_engine(args.pg)
    with c.temp_home() as tmp:
        stores: list[tuple[dict[str, str], int]] = []
        try:
            for index, tree in enumerate(trees):
                stores.append(store_for(tree, index, args.units, tmp, args.pg, admin))
            runs = [(tree, env, commands(job_id, args.units))
                    for tree, (env, job_id) in zip(trees, stores, strict=True)]
            for tree, env, cmds in runs:  # warm the page cache and every tree's bytecode once
                for argv in cmds.values():
                    run_cli(tree, argv, tmp, env)
            results: dict[tuple[str, Path], list[tuple[float, float]]] = {}
            load = []
            for _ in range(args.rounds):
                load.append(os.getloadavg()[0])
                for name in runs[0][2]:
                    for tree, env, cmds in runs:
                        results.setdefault((name, tree), []).append(run_cli(tree, cmds[name], tmp, env))
            store = "PostgreSQL" if args.pg else "SQLite"
            print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}, {store}, {args.units:,} units, "
                  f"{args.rounds} rounds, load average {min(load):.1f}-{max(load):.1f}")
            print(f"{'command':<16} {'tree':<28} {'wall median s':>14} {'CPU median s':>13} {'wall ratio':>11}")
            for name in runs[0][2]:
                base = statistics.median(w for w, _ in results[(name, trees[0])])
                for tree in trees:
                    walls = [w for w, _ in results[(name, tree)]]
                    cpus = [cpu for _, cpu in results[(name, tree)]]
                    ratio = statistics.median(walls) / base
                    print(f"{name:<16} {str(tree)[-28:]:<28} {statistics.median(walls):>14.3f} "
                          f"{statistics.median(cpus):>13.3f} {ratio:>11.2f}")
            if args.importtime:
                show_importtime(args.importtime, stores[0][1], args.units, tmp, stores[0][0])
        finally:
            if admin is not None:
                import sqlalchemy as sa

                with admin.begin() as conn:
                    for env, _ in stores:
                        conn.execute(sa.text(f'DROP SCHEMA "{env["ABP_BENCH_SCHEMA"]}" CASCADE'))
                admin.dispose()


if __name__ == "__main__":
    main()
