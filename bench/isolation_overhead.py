"""What `--isolate worktree` costs per unit, on a repository of 5,000 files / 50 MB.

What it measures:
  * steps: one unit's isolation work, alone (open: a worktree holding the base, new or an idle one
    reset; a one-line edit; capture: commit + patch + numstat; close: let it go idle), timed step by
    step over N units in sequence, then the same N units from 8 threads at once (the engine's shape:
    git's lock-taking steps serialised per repository, the rest in parallel). Figures: median and
    p95 milliseconds per unit; the first unit of each owner pays a whole checkout (`first open`).
  * job: the same `command` job (each unit sleeps 2 s and edits one file) at concurrency 8, run by
    the real detached executor with and without `--isolate worktree`, in the same run. Figures:
    the job's wall time and the mean unit duration; overhead = extra seconds per unit / 2 s.

Run (from the repository root, with the venv's python):
    python bench/isolation_overhead.py                   # 5,000 files / 50 MB, 40 units, 24-unit jobs
    python bench/isolation_overhead.py --files 500 --units 10 --job-units 8

Uses throwaway directories; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import abp, orchestrator, temp_home

from agentic_batch.isolation import JobWorktrees, resolve_base

EDIT = """
import pathlib, sys, time
time.sleep(float(sys.argv[2]))
p = pathlib.Path(sys.argv[1])
p.write_text(p.read_text() + "# edited\\n")
"""


def make_repo(root: Path, files: int, total_mb: float) -> None:
    size = int(total_mb * 1_000_000 / files)
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    line = "x = 'abcdefghijklmnopqrstuvwxyz0123456789'\n"
    body = line * max(1, size // len(line))
    for i in range(files):
        sub = root / f"pkg{i % 50}"
        sub.mkdir(exist_ok=True)
        (sub / f"mod{i}.py").write_text(f"# module {i}\n" + body)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "base"],
                   check=True)


def one_unit(jw: JobWorktrees, number: int, owner: str) -> dict[str, float]:
    t0 = time.perf_counter()
    unit = jw.open(owner, number, f"pkg{number % 50}/mod{number}.py")
    t1 = time.perf_counter()
    target = unit.path / f"pkg{number % 50}" / f"mod{number}.py"
    target.write_text(target.read_text() + "# edited\n")
    t2 = time.perf_counter()
    changes = jw.capture(unit, f"unit {number}")
    assert len(changes.files) == 1
    t3 = time.perf_counter()
    jw.close(unit)
    t4 = time.perf_counter()
    return {"open": t1 - t0, "capture": t3 - t2, "close": t4 - t3, "total": (t4 - t0) - (t2 - t1)}


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in rows[0]:
        values = sorted(r[key] * 1000 for r in rows)
        out[key] = {"median_ms": round(statistics.median(values), 1),
                    "p95_ms": round(values[min(len(values) - 1, int(len(values) * 0.95))], 1)}
    return out


def run_job(repo: Path, work: Path, units: int, isolate: bool) -> dict[str, float]:
    items = work / "items.jsonl"
    items.write_text("".join(json.dumps({"path": str(repo / f"pkg{i % 50}" / f"mod{i}.py")}) + "\n"
                             for i in range(units)))
    args = ["create", "--name", "bench-iso", "--jsonl", str(items), "--key", "path", "--concurrency", "8",
            "--command", f"{sys.executable} {work / 'edit.py'} {{{{ path }}}} 2", "--json"]
    if isolate:
        args += ["--isolate", "worktree"]
    created = json.loads(abp(*args, cwd=repo)[0])
    job = created["job_id"]
    started = time.time()
    abp("start", str(job), "--skip-test", cwd=repo)
    while True:
        status = json.loads(abp("status", str(job), "--json", cwd=repo)[0])
        if status["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.2)
    assert status["status"] == "COMPLETED", status
    orch = orchestrator()
    durations = [r["duration_s"] for r in orch.results(job) if r.get("duration_s") is not None]
    orch.store.close()
    if not isolate:  # in place: put the files back for the isolated run
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--", "."], check=True)
    return {"wall_s": round(time.time() - started, 2),
            "mean_unit_s": round(statistics.mean(durations), 3) if durations else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--units", type=int, default=40)
    parser.add_argument("--job-units", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="abp-bench-iso-") as tmp, temp_home() as scratch:
        home = scratch / "home"
        repo = Path(tmp) / "repo"
        t0 = time.perf_counter()
        make_repo(repo, args.files, args.mb)
        print(f"repository: {args.files} files, {args.mb:g} MB, made in {time.perf_counter() - t0:.1f} s "
              f"(git {subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.split()[-1]}, "
              f"{os.cpu_count()} CPUs)")
        base = resolve_base(repo)
        jw = JobWorktrees(repo=base.repo, base=base.commit, job_id=1, job_dir=home / "jobs" / "1",
                          lock_dir=home / "locks")
        first = one_unit(jw, 0, "seq")
        print(f"first open (a whole checkout): {first['open'] * 1000:.0f} ms")
        sequential = [one_unit(jw, n, "seq") for n in range(1, args.units + 1)]
        print("one unit at a time:", json.dumps(summarise(sequential)))
        with ThreadPoolExecutor(8) as pool:
            t0 = time.perf_counter()
            parallel = list(pool.map(lambda n: one_unit(jw, n, f"t{n % 8}"), range(args.units + 1, 2 * args.units + 1)))
            wall = time.perf_counter() - t0
        print(f"8 at once: {json.dumps(summarise(parallel))}; {args.units} units in {wall:.2f} s "
              f"= {wall / args.units * 1000:.0f} ms of wall time per unit")
        jw.release_idle()
        work = Path(tmp)
        (work / "edit.py").write_text(EDIT)
        plain = run_job(repo, work, args.job_units, isolate=False)
        isolated = run_job(repo, work, args.job_units, isolate=True)
        extra = isolated["mean_unit_s"] - plain["mean_unit_s"]
        print(f"job of {args.job_units} 2-second command units at concurrency 8: in place {plain}, "
              f"isolated {isolated}; isolation adds {extra * 1000:.0f} ms per unit ({extra / 2 * 100:.1f}% of 2 s)")


if __name__ == "__main__":
    main()
