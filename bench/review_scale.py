"""Review and apply at scale: an isolated `command` job of N units (default 1,000), each editing its own
file of a repository in its own worktree (the real executor, concurrency 8), then:
  * `abp diff JOB` (the changes list) and `abp diff JOB --json`, wall time of the whole CLI process;
  * the service call behind GET /api/jobs/JOB/changes (what the dashboard's Changes view reads);
  * `abp diff JOB UNIT` for one unit;
  * `abp apply JOB` of every unit (one commit each), then again (everything already applied), and
    `abp apply JOB --squash --onto` a fresh branch;
  * branches made and worktrees left (disk stays bounded: worktrees go as units finish).

Run (from the repository root, with the venv's python):
    python bench/review_scale.py                # 1,000 units
    python bench/review_scale.py --units 200
Uses a throwaway ABP_HOME and repository; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

EDITOR = "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'edited\\n')"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with c.temp_home() as tmp:
        repo = tmp / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.email", "bench@example.com")
        git(repo, "config", "user.name", "bench")
        c.write_files(repo, args.units)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "base")
        (tmp / "edit.py").write_text(EDITOR)
        job, _ = c.create_job("--name", "review-scale", "--files", "d*/*.txt", "--root", str(repo), "--worker",
                              "command", "--command", f"{sys.executable} {tmp / 'edit.py'} {{{{ path }}}}",
                              "--isolate", "worktree", "--concurrency", str(args.concurrency), cwd=repo)
        orch = c.orchestrator()
        t0 = time.perf_counter()
        c.abp("start", str(job), "--skip-test", cwd=repo)
        final = c.wait_final(orch, job)
        run_s = time.perf_counter() - t0
        branches = len(git(repo, "branch", "--list", f"abp/{job}/*").splitlines())
        worktrees = git(repo, "worktree", "list").count("\n")
        rows = [("job run (real executor)", f"{run_s:.1f} s", f"{final.status}, {branches} branches, "
                                                               f"{worktrees} worktrees left")]
        rows.append(("`abp diff JOB` (CLI process)", f"{c.best_of(3, lambda: c.abp('diff', str(job))):.2f} s", ""))
        rows.append(("`abp diff JOB --json`", f"{c.best_of(3, lambda: c.abp('diff', str(job), '--json')):.2f} s", ""))
        service_s = c.best_of(5, lambda: orch.changes(job))
        rows.append(("changes list (service: REST / dashboard)", f"{service_s * 1000:.0f} ms",
                     f"{orch.changes(job).changed} units changed"))
        rows.append(("`abp diff JOB 1` (one patch)", f"{c.best_of(3, lambda: c.abp('diff', str(job), '1')):.2f} s", ""))
        out, apply_s = c.abp("apply", str(job), "--json", cwd=repo)
        result = json.loads(out)
        rows.append(("`abp apply JOB` (one commit per unit)", f"{apply_s:.1f} s",
                     f"{len(result['applied'])} applied, {len(result['conflicts'])} conflicts, "
                     f"{apply_s / max(len(result['applied']), 1) * 1000:.1f} ms/unit"))
        out, again_s = c.abp("apply", str(job), "--json", cwd=repo)
        rows.append(("`abp apply JOB` again", f"{again_s:.2f} s",
                     f"{len(json.loads(out)['already_applied'])} already applied"))
        git(repo, "branch", "squashed", "main")
        out, squash_s = c.abp("apply", str(job), "--squash", "--onto", "squashed", "--json", cwd=repo)
        rows.append(("`abp apply JOB --squash --onto B`", f"{squash_s:.1f} s",
                     f"{len(json.loads(out)['commits'])} commit"))
        print(f"{args.units} units, concurrency {args.concurrency}; {c.machine()}\n")
        print("| step | time | notes |\n|---|---|---|")
        for step, figure, note in rows:
            print(f"| {step} | {figure} | {note} |")


if __name__ == "__main__":
    main()
