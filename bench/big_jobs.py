"""Big jobs, before/after: creating N units (`abp create`) and exporting N units to CSV (`abp results`).

Issue 16, goal 5: create 100,000 units in 2 s or less; export 500,000 units to CSV in one streaming
pass in 5 s or less, with flat memory. Each round runs every measurement once per tree, alternating
(a tree is a checkout of the project: the one this script is in, and any `--tree DIR` to compare
against, e.g. `git archive OLD | tar -x -C DIR`), each in its own process with that tree first on
the path, run from outside every tree. Recorded per run: wall time, CPU time (user+sys of the child,
`wait4`) and the child's peak RSS. Printed: medians per measurement and tree, and ratios to the first
tree.

Measurements (`--what`):
  * create-fresh: `abp create --jsonl items.jsonl --command true --prompt ...` of N items into a new
    store (interpreter start, imports, the store's creation and migration included);
  * create: the same into a store that already holds a job (what a user's second job costs);
  * create-service: `Orchestrator().create(spec)` in a process whose store is open (CPU of the call);
  * export: `abp results JOB --format csv -o FILE` of an N-unit job (half COMPLETED with an output, a
    cost and `data` fields; each tree's store built by its own code), whose output must be the same
    bytes in every tree (checked: SHA-256);
  * export-jsonl: the same as JSON lines.

    python bench/big_jobs.py --tree /tmp/abp-before-bigjobs --what create create-fresh create-service
    python bench/big_jobs.py --tree /tmp/abp-before-bigjobs --what export --units 500000 --rounds 3
    python bench/big_jobs.py --what export --units 100000 500000        # peak RSS against N: flat?
    python bench/big_jobs.py --tree /tmp/abp-before-bigjobs --pg postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
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
BENCH = Path(__file__).resolve().parent
PROMPT = "Summarise {{ title }}"

SERVICE_CREATE = """
import json, sys, time
from pathlib import Path
from agentic_batch.service import Orchestrator
orch = Orchestrator()
spec = {"name": "bench-create", "source": {"kind": "jsonl", "path": sys.argv[1]}, "prompt": sys.argv[2],
        "worker": "command", "worker_options": {"command": "true"}}
orch.create({**spec, "name": "warm-up", "source": {"kind": "jsonl", "path": sys.argv[3]}}, cwd=Path.cwd())
t0, c0 = time.perf_counter(), time.process_time()
units = orch.create(spec, cwd=Path.cwd()).units
print(json.dumps({"units": units, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"""

BUILD_EXPORT_JOB = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import export_results
orch, job_id = export_results.build_job(int(sys.argv[2]), Path(sys.argv[3]))
print(job_id)
"""


def run_child(tree: Path, argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run `python ARGV` with `tree` first on the path, from `cwd`; wall, CPU (user+sys) and peak RSS of
    that child alone (reaped with wait4), and its stdout."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(tree)}
    out_path = cwd / f".out-{uuid.uuid4().hex[:8]}"
    with open(out_path, "w") as out, open(out_path.with_suffix(".err"), "w") as err:
        t0 = time.perf_counter()
        pid = subprocess.Popen([sys.executable, *argv], env=full_env, cwd=cwd, stdout=out, stderr=err).pid
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
    text, errors = out_path.read_text(), out_path.with_suffix(".err").read_text()
    out_path.unlink()
    out_path.with_suffix(".err").unlink()
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {tree}:\n{text}\n{errors}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024, "out": text}


class Stores:
    """A fresh store per (tree, purpose): an ABP_HOME under tmp, or a fresh PostgreSQL schema."""

    def __init__(self, tmp: Path, pg: str | None) -> None:
        self.tmp, self.pg, self.schemas = tmp, pg, []
        self.admin = None
        if pg:
            import sqlalchemy as sa

            self.admin = sa.create_engine(pg)

    def new(self) -> dict[str, str]:
        name = uuid.uuid4().hex[:8]
        env = {"ABP_HOME": str(self.tmp / f"home-{name}")}
        if self.admin is not None:
            import sqlalchemy as sa

            schema = f"abp_bench_{name}"
            with self.admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            self.schemas.append(schema)
            sep = "&" if "?" in str(self.pg) else "?"
            env["ABP_DB_URL"] = f"{self.pg}{sep}options={quote(f'-csearch_path={schema}')}"
        return env

    def close(self) -> None:
        if self.admin is not None:
            import sqlalchemy as sa

            with self.admin.begin() as conn:
                for schema in self.schemas:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            self.admin.dispose()


def create_argv(source: Path) -> list[str]:
    return ["-m", "agentic_batch", "create", "--name", "bench-create", "--jsonl", str(source), "--command", "true",
            "--prompt", PROMPT, "--json"]


def measure_create(what: str, tree: Path, n: int, tmp: Path, stores: Stores) -> dict[str, Any]:
    source, one = tmp / f"items-{n}.jsonl", tmp / "one.jsonl"
    env = stores.new()
    if what == "create-service":
        result = run_child(tree, ["-c", SERVICE_CREATE, str(source), PROMPT, str(one)], env, tmp)
        inner = json.loads(result["out"])
        units = inner["units"]
        result.update(wall=inner["wall"], cpu=inner["cpu"])
    else:
        if what == "create":
            run_child(tree, create_argv(one), env, tmp)
        result = run_child(tree, create_argv(source), env, tmp)
        units = json.loads(result["out"])["units"]
    if units != n:
        raise SystemExit(f"{what} in {tree}: {units} units, expected {n}")
    return result


def measure_export(what: str, tree: Path, job: tuple[dict[str, str], int], tmp: Path) -> dict[str, Any]:
    env, job_id = job
    fmt = "jsonl" if what == "export-jsonl" else "csv"
    path = tmp / f"export-{uuid.uuid4().hex[:8]}.{fmt}"
    result = run_child(tree, ["-m", "agentic_batch", "results", str(job_id), "--format", fmt, "-o", str(path)],
                       env, tmp)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    result["sha256"] = digest.hexdigest()[:16]
    result["mb"] = path.stat().st_size / 2**20
    path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", nargs="+", default=["create", "create-fresh", "create-service", "export"],
                        choices=["create", "create-fresh", "create-service", "export", "export-jsonl"])
    parser.add_argument("--units", type=int, nargs="+", default=None,
                        help="N (default: 100,000 for creates, 500,000 for exports)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to compare (alternated with this one)")
    parser.add_argument("--pg", help="a PostgreSQL URL: fresh schemas there instead of SQLite stores")
    args = parser.parse_args()
    trees = [HERE, *[t.resolve() for t in args.tree]]
    results: dict[tuple[str, int, Path], list[dict[str, Any]]] = {}
    load: list[float] = []
    with c.temp_home() as tmp:
        stores = Stores(tmp, args.pg)
        try:
            c.write_jsonl(tmp / "one.jsonl", 1)
            plan: list[tuple[str, int]] = []
            jobs: dict[tuple[int, Path], tuple[dict[str, str], int]] = {}
            for what in args.what:
                sizes = args.units or ([500_000] if what.startswith("export") else [100_000])
                for n in sizes:
                    plan.append((what, n))
                    if what.startswith("create") and not (tmp / f"items-{n}.jsonl").exists():
                        c.write_jsonl(tmp / f"items-{n}.jsonl", n)
                    for tree in trees:
                        if what.startswith("export") and (n, tree) not in jobs:
                            env = stores.new()
                            t0 = time.perf_counter()
                            built = run_child(tree, ["-c", BUILD_EXPORT_JOB, str(BENCH), str(n), str(tmp)], env, tmp)
                            jobs[(n, tree)] = (env, int(built["out"].split()[-1]))
                            print(f"  built a {n:,}-unit job for {tree} in {time.perf_counter() - t0:.1f} s",
                                  flush=True)
            for _ in range(args.rounds):
                load.append(os.getloadavg()[0])
                for what, n in plan:
                    for tree in trees:
                        if what.startswith("export"):
                            result = measure_export(what, tree, jobs[(n, tree)], tmp)
                        else:
                            result = measure_create(what, tree, n, tmp, stores)
                        results.setdefault((what, n, tree), []).append(result)
                        print(f"  {what:<15} {n:>9,} {str(tree)[-24:]:<24} wall {result['wall']:6.2f} s  "
                              f"CPU {result['cpu']:6.2f} s  peak RSS {result['rss_mb']:6.1f} MB"
                              + (f"  {result['mb']:.0f} MB sha256 {result['sha256']}" if "sha256" in result else ""),
                              flush=True)
        finally:
            stores.close()
    store = "PostgreSQL" if args.pg else "SQLite"
    print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}, {store}, {args.rounds} rounds, "
          f"load average {min(load):.1f}-{max(load):.1f}")
    print("| measurement | units | tree | wall (median s) | CPU (median s) | peak RSS (MB) | CPU ratio |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for what, n in plan:
        base = statistics.median(r["cpu"] for r in results[(what, n, trees[0])])
        for tree in trees:
            runs = results[(what, n, tree)]
            cpu = statistics.median(r["cpu"] for r in runs)
            print(f"| {what} | {n:,} | {tree.name} | {statistics.median(r['wall'] for r in runs):.2f} | {cpu:.2f} | "
                  f"{max(r['rss_mb'] for r in runs):.0f} | {cpu / base:.2f} |")
        digests = {r["sha256"] for tree in trees for r in results[(what, n, tree)] if "sha256" in r}
        if len(digests) > 1:
            print(f"**{what} {n:,}: the trees' outputs differ** ({', '.join(sorted(digests))})")
        elif digests:
            print(f"({what} {n:,}: the same bytes from every tree and round, sha256 {digests.pop()})")


if __name__ == "__main__":
    main()
