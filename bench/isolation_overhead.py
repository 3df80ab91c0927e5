"""What `--isolate worktree` costs per unit, on a repository of 5,000 files / 50 MB.

What it measures:
  * steps: one unit's isolation work, alone (open: a worktree holding the base, new or an idle one
    reset; a one-line edit; capture: commit + patch + numstat; close: let it go idle), timed step by
    step over N units in sequence, then the same N units from 8 threads at once (the engine's shape:
    git's lock-taking steps serialised per repository, the rest in parallel). Figures: median and
    p95 milliseconds per unit, the git processes per unit and their CPU (user+sys, from
    RUSAGE_CHILDREN: robust when other work loads the machine); the first unit of each owner pays a
    whole checkout (`first open`).
  * job: the same `command` job (each unit sleeps 2 s and edits one file) at concurrency 8, run by
    the real detached executor in place and with `--isolate worktree`, the two arms alternated for
    `--rounds` rounds in the same run. Figures per arm: the job's wall time (`abp start` to
    COMPLETED; `exit_s`: to the executor's exit, after it deleted its worktrees' files), the mean
    unit duration (claim to result), the executor's CPU (its own and its children's: git, the
    commands) per unit, and its own timing of the per-run steps (checking out its 8 worktrees before
    the first claim, deleting them after the job); overhead = isolated minus in place, per unit,
    against the 2 s of a unit.

Run (from the repository root, with the venv's python):
    python bench/isolation_overhead.py                   # 5,000 files / 50 MB, 40 units, 24-unit jobs
    python bench/isolation_overhead.py --files 500 --units 10 --job-units 8 --rounds 1

Uses throwaway directories; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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


class GitCount:
    """Counts the git processes `agentic_batch.isolation` starts (bench only: wraps its subprocess.run)."""

    def __init__(self) -> None:
        from agentic_batch.isolation import git as git_module

        self.count = 0
        real = git_module.subprocess.run

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.count += 1
            return real(*args, **kwargs)

        class Shim:
            run = staticmethod(counting)
            DEVNULL = subprocess.DEVNULL
            CompletedProcess = subprocess.CompletedProcess

        git_module.subprocess = Shim  # type: ignore[assignment]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_unit(jw: JobWorktrees, number: int, owner: str, counter: GitCount | None = None) -> dict[str, float]:
    procs0, cpu0 = (counter.count if counter else 0), children_cpu()
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
    row = {"open": t1 - t0, "capture": t3 - t2, "close": t4 - t3, "total": (t4 - t0) - (t2 - t1)}
    if counter is not None:  # only meaningful one unit at a time (children's CPU is process-wide)
        row["git_cpu"] = children_cpu() - cpu0
        row["git_procs"] = (counter.count - procs0) / 1000  # shown x1000 by summarise
    return row


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in rows[0]:
        values = sorted(r[key] * 1000 for r in rows)
        out[key] = {"median_ms": round(statistics.median(values), 1),
                    "p95_ms": round(values[min(len(values) - 1, int(len(values) * 0.95))], 1)}
    if "git_procs" in out:
        out["git_procs"] = {"per_unit": out.pop("git_procs")["median_ms"]}
    return out


def executor_cpu(pid: int) -> float | None:
    """CPU seconds of a live process and of its waited-for children (git, the commands), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
    pid = json.loads(abp("start", str(job), "--skip-test", "--json", cwd=repo)[0])["executor"]["pid"]
    orch = orchestrator()
    cpu = 0.0
    while True:
        sample = executor_cpu(pid)
        cpu = sample if sample is not None else cpu
        record = orch.store.jobs.get_job(job)
        if record.status in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    assert record.status == "COMPLETED", record.error
    deadline = time.time() + 600  # the executor deletes its worktrees' files after the job ends: wait for
    while time.time() < deadline:  # it (its CPU counts, and the next arm must not run beside it)
        sample = executor_cpu(pid)
        if sample is None:
            break
        cpu = sample
        time.sleep(0.05)
    exited = time.time()
    durations = [r["duration_s"] for r in orch.results(job) if r.get("duration_s") is not None]
    said = {}  # the executor's own timing of the per-run steps: checking out and removing its worktrees
    for line in orch.logs(job):
        found = re.match(r"(checked out|removed) \d+ (?:idle )?worktree\(s\).* in ([0-9.]+)s$", line.message)
        if found:
            said["checkout_s" if found[1] == "checked out" else "remove_s"] = float(found[2])
    orch.store.close()
    if not isolate:  # in place: put the files back for the isolated run
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--", "."], check=True)
    return {"wall_s": round(record.finished_at - started, 2), "exit_s": round(exited - started, 2),
            "mean_unit_s": round(statistics.mean(durations), 3) if durations else float("nan"),
            "executor_cpu_ms_per_unit": round(cpu / units * 1000, 1), **said}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--units", type=int, default=40)
    parser.add_argument("--job-units", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the in-place and isolated jobs")
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
        counter = GitCount()
        first = one_unit(jw, 0, "seq")
        print(f"first open (a whole checkout): {first['open'] * 1000:.0f} ms")
        sequential = [one_unit(jw, n, "seq", counter) for n in range(1, args.units + 1)]
        print("one unit at a time:", json.dumps(summarise(sequential)))
        t0, cpu0 = time.perf_counter(), children_cpu()
        made = jw.prepare("t", 8)
        print(f"prepare 8 worktrees (whole checkouts, {os.cpu_count()} at a time): {time.perf_counter() - t0:.2f} s, "
              f"git CPU {children_cpu() - cpu0:.2f} s")
        assert made == 8
        with ThreadPoolExecutor(8) as pool:
            t0, cpu0 = time.perf_counter(), children_cpu()
            parallel = list(pool.map(lambda n: one_unit(jw, n, "t"), range(args.units + 1, 2 * args.units + 1)))
            wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        print(f"8 at once: {json.dumps(summarise(parallel))}; {args.units} units in {wall:.2f} s "
              f"= {wall / args.units * 1000:.0f} ms of wall time and {cpu / args.units * 1000:.0f} ms of git CPU "
              "per unit")
        t0, cpu0 = time.perf_counter(), children_cpu()
        removed = jw.release_idle()
        print(f"release {removed} idle worktrees: {time.perf_counter() - t0:.2f} s, git CPU "
              f"{children_cpu() - cpu0:.2f} s (the files' deletion is in this process: not in git's CPU)")
        work = Path(tmp)
        (work / "edit.py").write_text(EDIT)
        arms: dict[str, list[dict[str, float]]] = {"in place": [], "isolated": []}
        for round_ in range(1, args.rounds + 1):
            for name, isolate in (("in place", False), ("isolated", True)):
                figures = run_job(repo, work, args.job_units, isolate=isolate)
                arms[name].append(figures)
                print(f"round {round_}, {name}: {figures} (load average {os.getloadavg()[0]:.1f})")
        med = {name: {key: statistics.median(r.get(key, 0.0) for r in rows) for key in rows[0]}
               for name, rows in arms.items()}
        extra = med["isolated"]["mean_unit_s"] - med["in place"]["mean_unit_s"]
        extra_wall = (med["isolated"]["wall_s"] - med["in place"]["wall_s"]) * 8 / args.job_units
        extra_cpu = med["isolated"]["executor_cpu_ms_per_unit"] - med["in place"]["executor_cpu_ms_per_unit"]
        print(f"job of {args.job_units} 2-second command units at concurrency 8, medians of {args.rounds} round(s): "
              f"in place {med['in place']}, isolated {med['isolated']}")
        fixed = med["isolated"].get("checkout_s", 0.0)
        extra_run = (med["isolated"]["wall_s"] - fixed - med["in place"]["wall_s"]) * 8 / args.job_units
        print(f"per run: {fixed:.1f} s checking out the 8 worktrees before the first claim, "
              f"{med['isolated'].get('remove_s', 0.0):.1f} s deleting them after the job ended; the rest of the "
              f"job's wall time adds {extra_run * 1000:.0f} ms per unit ({extra_run / 2 * 100:.1f}% of 2 s)")
        print(f"isolation adds {extra * 1000:.0f} ms per unit ({extra / 2 * 100:.1f}% of 2 s) to the unit's time, "
              f"{extra_wall * 1000:.0f} ms per unit ({extra_wall / 2 * 100:.1f}%) to the job's wall time "
              f"(x concurrency / units), and {extra_cpu:.0f} ms of CPU per unit")

if __name__ == "__main__":
    main()
