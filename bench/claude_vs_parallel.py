"""The real Claude Code CLI through `abp` against the same CLI under GNU parallel: units/s and ratio.

What it measures: N units (default 40) at concurrency C (default 4), each one real run of the Claude
Code CLI bundled in claude-agent-sdk, talking to the scripted Anthropic server
(`python -m agentic_batch.testing.anthropic_server --scenario write-file`, a subprocess on 127.0.0.1).
With `write-file` each run is two model turns and one real Write tool call (`result.txt` in the
unit's directory); `echo` is one turn of text.

  * abp: a files source of N files, one per directory (`uNNN/doc.md`, so each unit gets a directory of
    its own as its cwd), `abp create --worker claude --prompt 'Summarise the file. FILE={{ path }}'
    --concurrency C`, then `abp start JOB --skip-test`; time from invoking `abp start` to the job's
    finished_at (COMPLETED), so process start-up, every event, result and cost write are inside it.
  * parallel: the same prompts (the ones abp rendered, with only the tree's directory name changed) in
    a tab-separated file, run by
        parallel -j C --colsep '\\t' --arg-file tasks.tsv \\
            'cd {1} && exec claude -p {2} --output-format stream-json --verbose --permission-mode acceptEdits'
    with stdout (all the stream-json) going to one file and stdin from /dev/null; timed from launch to
    exit.
  * parallel-setsid: the same, with `exec setsid -w claude ...`, so each CLI runs in a session (and
    process group) of its own, as it does under abp (the worker's launcher calls setsid()). Measured
    because the CLI itself runs measurably slower when four of them share parallel's process group.
  * Both use the same offline environment (`agentic_batch.testing.claude_env.isolated_environ`: the
    server's URL, a dummy key, a private HOME shared by both arms, CLAUDE_CODE_MAX_RETRIES=0), the
    same server process, and a fresh directory tree per run. The arms alternate (abp first in odd
    rounds, parallel first in even ones) and the medians are reported, because the machine is noisy.
  * ratio = abp units/s / parallel units/s, for each parallel arm (abp stores every message and
    should lose under 5%).
    Also printed: CPU seconds of the executor itself and of everything it ran (its reaped children,
    i.e. the CLIs and their launchers), and of the parallel run and its children.
    And the slot refill: the median time from a unit's end (abp: its `result` event; parallel: the
    CLI's exit, from the joblog) to the next unit's start in the slot it freed, which load moves far
    less than the wall time.

Run (from the repository root, with the venv's python):
    python bench/claude_vs_parallel.py                       # 40 units, -j4, 3 rounds, write-file, 3 arms
    python bench/claude_vs_parallel.py --scenario echo --rounds 5 --arms abp parallel
    python bench/claude_vs_parallel.py --arms abp --rounds 1 --py-spy /tmp/claude-exec.txt   # profile
    python bench/claude_vs_parallel.py --units 40 120 --rounds 3     # both sizes of issue 16, one run
    python bench/claude_vs_parallel.py --before /tmp/abp-before      # + the arm abp-before (another tree)

CPU of an abp arm: the `abp start` process (getrusage), the executor and everything it reaped (the
CLIs with their launchers, the watchdog), from /proc; of a parallel arm: parallel and its children.

Uses a throwaway ABP_HOME and directory tree per run; nothing under ~/.agentic-batch or ~/.claude is
touched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _agents as a
import _common as c

from agentic_batch.testing.claude_env import isolated_environ
from agentic_batch.workers.claude_process import bundled_cli

PROMPT = "Summarise the file. FILE={{ path }}"
ARMS = ("abp", "parallel", "parallel-setsid")
#: Optional arms: abp without one of its start-up savings (the portable `python -I -S` launcher instead
#: of the util-linux one; no warm executor), and abp with a rate limit too high to bind, so that every
#: model call goes through the --rpm gateway (workers/claude_gateway.py): what the gateway costs.
#: arm -> (tree suffix of the same length as "abp", environment, extra `abp create` arguments)
EXTRA_ARMS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "abp-python-launcher": ("apl", {"ABP_CLAUDE_LAUNCHER": "python"}, ()),
    "abp-no-warm": ("anw", {"ABP_WARM_EXECUTOR": "0"}, ()),
    "abp-gateway": ("agw", {}, ("--rpm", "1000000")),
    "abp-before": ("abb", {}, ()),  # PYTHONPATH: the --before tree
}


def refill_gap(ends: list[float], starts: list[float], concurrency: int) -> float:
    """Median seconds from a slot's previous unit ending (its result: abp; its CLI's exit: parallel) to
    the next unit starting in it: each start after the first wave is matched to the latest end before it
    (the slot that freed it, when results do not arrive together). Less load-sensitive than the wall."""
    ends = sorted(ends)
    gaps = []
    for start in sorted(starts)[concurrency:]:
        before = [end for end in ends if end <= start]
        if before:
            gaps.append(start - before[-1])
    return a.median(gaps) if gaps else float("nan")


def make_tree(root: Path, units: int) -> Path:
    for i in range(units):
        folder = root / f"u{i:03d}"
        folder.mkdir(parents=True)
        (folder / "doc.md").write_text(f"# Document {i}\n\nSome text.\n")
    return root


def check_written(root: Path, units: int, scenario: str) -> None:
    if scenario != "write-file":
        return
    missing = [d.name for d in sorted(root.iterdir()) if d.is_dir() and not (d / "result.txt").is_file()]
    if missing or len(list(root.iterdir())) != units:
        raise SystemExit(f"result.txt missing in {len(missing)} unit directories under {root}: {missing[:5]}")


def run_abp(tmp: Path, tag: str, units: int, concurrency: int, env: dict[str, str],
            scenario: str, py_spy: Path | None = None, suffix: str = "abp", create_args: tuple[str, ...] = ()) -> dict:
    tree = make_tree(tmp / f"{tag}-{suffix}", units)
    job_id, _ = create_job(env,"--name", f"claude-{tag}", *create_args, "--files", "*/doc.md", "--root", str(tree),
                             "--worker", "claude", "--prompt", PROMPT, "--concurrency", str(concurrency),
                             "--max-retries", "0", cwd=tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "agentic_batch", "start", str(job_id), "--skip-test", "--json"],
                          capture_output=True, text=True, env=env, cwd=tree, check=False)  # the executor inherits env
    returned = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the `abp start` process (the executor is detached)
    start_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"abp start failed: {proc.stdout}\n{proc.stderr}")
    pid = int(json.loads(proc.stdout)["executor"]["pid"])
    spy = a.start_py_spy(pid, py_spy) if py_spy else None
    watch = a.CpuWatch(pid)
    watch.sample()
    startup_cpu = watch.self_s  # the executor holds its lock and is about to claim: start-up is done
    status, _, finished = a.wait_job(job_id, timeout=600, watch=watch, pid=pid)
    a.wait_executor_gone(pid)
    if spy is not None:
        a.stop_py_spy(spy)
    counts = a.unit_counts(job_id)
    if status != "COMPLETED" or counts.get("COMPLETED") != units:
        with sqlite3.connect(c.db_path()) as conn:
            errors = conn.execute("SELECT error FROM units WHERE job_id = ? AND error IS NOT NULL LIMIT 3",
                                  (job_id,)).fetchall()
        raise SystemExit(f"abp job ended {status} with {counts}: {errors}")
    check_written(tree, units, scenario)
    first_start = c.query_one("SELECT MIN(started_at) FROM units WHERE job_id = ?", job_id)[0]
    events = c.query_one("SELECT COUNT(*) FROM events WHERE job_id = ?", job_id)[0]
    unit_s = c.query_one("SELECT AVG(finished_at - started_at) FROM units WHERE job_id = ?", job_id)[0]
    prompts = [row[0] for row in _prompts(job_id)]
    with sqlite3.connect(f"file:{c.db_path()}?mode=ro", uri=True) as conn:
        marks = conn.execute("SELECT kind, ts FROM events WHERE job_id = ? AND kind IN ('result', 'start')",
                             (job_id,)).fetchall()
    gap = refill_gap([ts for kind, ts in marks if kind == "result"], [ts for kind, ts in marks if kind == "start"],
                     concurrency)
    seconds = (finished or time.time()) - t0
    return {"seconds": seconds, "rate": units / seconds, "start_returned_s": returned,
            "first_unit_started_s": first_start - t0, "executor_cpu_s": watch.self_s, "startup_cpu_s": startup_cpu,
            "start_cpu_s": start_cpu,
            "children_cpu_s": watch.children_s, "events": events, "unit_s": unit_s, "tree": tree, "prompts": prompts,
            "gap_s": gap}


def create_job(env: dict[str, str], *args: str, cwd: Path) -> tuple[int, float]:
    """`abp create` with the arm's environment (its PYTHONPATH picks the tree that runs it)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env.get("PYTHONPATH", "")
    try:
        return c.create_job(*args, cwd=cwd)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _prompts(job_id: int) -> list[tuple[str]]:
    with sqlite3.connect(f"file:{c.db_path()}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT prompt FROM units WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()


def run_parallel(tmp: Path, tag: str, units: int, concurrency: int, env: dict[str, str], cli: str,
                 prompts: list[str], abp_tree: Path, scenario: str, setsid: bool = False) -> dict:
    tag = f"{tag}-{'pss' if setsid else 'par'}"  # same length as "-abp": the prompts keep their length
    tree = make_tree(tmp / tag, units)
    tasks = tmp / f"{tag}-tasks.tsv"
    with tasks.open("w") as fh:
        for prompt in prompts:
            prompt = prompt.replace(str(abp_tree), str(tree))
            unit_dir = prompt.rsplit("FILE=", 1)[1].rsplit("/", 1)[0]
            fh.write(f"{unit_dir}\t{prompt}\n")
    command = (f"cd {{1}} && exec {'setsid -w ' if setsid else ''}{cli} -p {{2}} --output-format stream-json --verbose "
               f"--permission-mode acceptEdits")
    out_path = tmp / f"{tag}-parallel.jsonl"
    joblog = tmp / f"{tag}-joblog.tsv"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with out_path.open("w") as out:
        # stdin from /dev/null: parallel hands its stdin to the first job, and `claude -p` with an open,
        # silent stdin waits 3 s for piped input ("no stdin data received in 3s").
        proc = subprocess.run(["parallel", "-j", str(concurrency), "--joblog", str(joblog), "--colsep", "\t",
                               "--arg-file", str(tasks), command], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.PIPE, text=True, env=env, check=False)
    seconds = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = [json.loads(line) for line in out_path.read_text().splitlines() if '"type":"result"' in line]
    ok = sum(1 for r in results if r.get("type") == "result" and not r.get("is_error"))
    if proc.returncode != 0 or ok != units:
        raise SystemExit(f"parallel exited {proc.returncode} with {ok}/{units} good results: {proc.stderr[-2000:]}")
    check_written(tree, units, scenario)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = [line.split("\t") for line in joblog.read_text().splitlines()[1:] if line.strip()]
    runtimes = [float(row[3]) for row in rows]
    gap = refill_gap([float(row[2]) + float(row[3]) for row in rows], [float(row[2]) for row in rows], concurrency)
    return {"seconds": seconds, "rate": units / seconds, "cpu_s": cpu, "unit_s": sum(runtimes) / len(runtimes),
            "stderr_lines": len(proc.stderr.splitlines()), "gap_s": gap}


def run_size(args: argparse.Namespace, units: int, arms: list[str], tmp: Path, env: dict[str, str], cli: str) -> None:
    """Every arm at one job size, `args.rounds` rounds, the order rotating each round; then the medians."""
    print(f"## {units} units, concurrency {args.concurrency}; load average {_load()} at the start", flush=True)
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for rnd in range(1, args.rounds + 1):
        tag = f"n{units}r{rnd}"
        abp_tree = tmp / f"{tag}-abp"
        prompts = [PROMPT.replace("{{ path }}", str(abp_tree / f"u{i:03d}" / "doc.md")) for i in range(units)]
        shift = (rnd - 1) % len(arms)  # rotate the order: no arm always runs first
        for arm in arms[shift:] + arms[:shift]:
            if arm.startswith("abp"):
                spy = args.py_spy if rnd == args.rounds and arm == "abp" else None
                suffix, extra_env, create_args = EXTRA_ARMS.get(arm, ("abp", {}, ()))
                if arm == "abp-before":
                    extra_env = {"PYTHONPATH": str(args.before)}
                res = run_abp(tmp, tag, units, args.concurrency, {**env, **extra_env}, args.scenario,
                              py_spy=spy, suffix=suffix, create_args=create_args)
                if [x.replace(f"{tag}-{suffix}", f"{tag}-abp") for x in res.pop("prompts")] != prompts:
                    raise SystemExit("abp rendered other prompts than the parallel arms get")
                res.pop("tree")
                res["cpu_s"] = res["start_cpu_s"] + res["executor_cpu_s"] + res["children_cpu_s"]
                print(f"round {rnd} {arm:16s} {res['seconds']:6.2f} s  {res['rate']:5.2f} units/s  "
                      f"(start returned {res['start_returned_s']:.2f} s, first unit at "
                      f"{res['first_unit_started_s']:.2f} s; CPU {res['cpu_s']:.1f} s: `abp start` "
                      f"{res['start_cpu_s']:.2f}, executor {res['executor_cpu_s']:.2f} of which "
                      f"{res['startup_cpu_s']:.2f} before the first claim, its children {res['children_cpu_s']:.1f}; "
                      f"{res['events']} events, mean unit {res['unit_s']:.2f} s, result to the slot's next start "
                      f"{res['gap_s'] * 1000:.0f} ms; load {_load()})", flush=True)
            else:
                res = run_parallel(tmp, tag, units, args.concurrency, env, cli, prompts, abp_tree,
                                   args.scenario, setsid=arm == "parallel-setsid")
                print(f"round {rnd} {arm:16s} {res['seconds']:6.2f} s  {res['rate']:5.2f} units/s  "
                      f"(CPU of parallel and its children {res['cpu_s']:.1f} s, mean job {res['unit_s']:.2f} s, "
                      f"{res['stderr_lines']} stderr lines, exit to the slot's next start "
                      f"{res['gap_s'] * 1000:.0f} ms; load {_load()})", flush=True)
            runs[arm].append(res)

    for arm, arm_runs in runs.items():
        print(f"median {units} {arm:16s} {a.median([r['rate'] for r in arm_runs]):.3f} units/s  "
              f"({a.median([r['seconds'] for r in arm_runs]):.2f} s; mean unit "
              f"{a.median([r['unit_s'] for r in arm_runs]):.2f} s; CPU incl. children "
              f"{a.median([r['cpu_s'] for r in arm_runs]):.1f} s; slot refill "
              f"{a.median([r['gap_s'] for r in arm_runs]) * 1000:.0f} ms)")
    for base in (x for x in ("abp", "abp-before") if x in runs):
        print(f"{base} at {units} units: `abp start` CPU {a.median([r['start_cpu_s'] for r in runs[base]]):.2f} s, "
              f"executor CPU {a.median([r['executor_cpu_s'] for r in runs[base]]):.2f} s, of which "
              f"{a.median([r['startup_cpu_s'] for r in runs[base]]):.2f} s before the first claim (medians)")
        rate = a.median([r["rate"] for r in runs[base]])
        peers = [x for x in arms if not x.startswith("abp")]
        others = peers if base == "abp-before" else [x for x in arms if x != "abp"]
        for arm in others:
            ratios = [x["rate"] / y["rate"] for x, y in zip(runs[base], runs[arm], strict=True)]
            other = a.median([r["rate"] for r in runs[arm]])
            print(f"ratio {units} {base} / {arm}: {rate / other:.3f} (medians); per round "
                  + ", ".join(f"{r:.3f}" for r in ratios) + f"; median of per-round ratios {a.median(ratios):.3f}")
    print(f"## {units} units done; load average {_load()}", flush=True)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[40],
                    help="job sizes, each run with every arm for --rounds rounds (e.g. --units 40 120)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenario", choices=["write-file", "echo"], default="write-file")
    ap.add_argument("--latency", type=float, default=0.0, help="server seconds before each reply")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--arms", nargs="+", choices=ARMS + tuple(EXTRA_ARMS), default=list(ARMS),
                    help="parallel-setsid runs each CLI as `setsid -w claude ...`, in a session of its own "
                         "as abp's launcher does; abp-python-launcher is abp with ABP_CLAUDE_LAUNCHER=python, "
                         "abp-no-warm abp with ABP_WARM_EXECUTOR=0, "
                         "abp-gateway abp with --rpm 1000000 (every model call through the rate gateway), "
                         "abp-before abp from the tree given by --before")
    ap.add_argument("--before", type=Path, help="another checkout of the project (e.g. `git archive OLD | tar -x "
                    "-C DIR`), run as the arm abp-before: before/after under the same load")
    ap.add_argument("--py-spy", type=Path, help="sample the executor of the last abp run into this raw file")
    args = ap.parse_args()
    cli = bundled_cli()
    if cli is None or shutil.which("parallel") is None:
        raise SystemExit("needs the claude-agent-sdk bundled CLI and GNU parallel")
    arms = list(args.arms)
    if args.before is not None and "abp-before" not in arms:
        arms.insert(1, "abp-before")
    if "abp-before" in arms and (args.before is None or not (args.before / "agentic_batch").is_dir()):
        raise SystemExit("the arm abp-before needs --before DIR, a checkout with agentic_batch/ in it")

    print(f"# claude CLI vs GNU parallel: {' and '.join(map(str, args.units))} units, concurrency "
          f"{args.concurrency}, scenario {args.scenario}, latency {args.latency}s, {args.rounds} rounds, "
          f"arms {', '.join(arms)}")
    print(f"# {c.machine()}, {datetime.datetime.now().isoformat(timespec='seconds')}, load average {_load()}")
    with c.temp_home(keep=args.keep) as tmp, \
            a.server("anthropic_server", "--scenario", args.scenario, "--latency", str(args.latency)) as srv:
        claude_home = tmp / "claude-home"
        claude_home.mkdir()
        env = isolated_environ(srv.url, claude_home)
        env["ABP_HOME"] = os.environ["ABP_HOME"]
        for units in args.units:
            run_size(args, units, arms, tmp, env, str(cli))


if __name__ == "__main__":
    main()
