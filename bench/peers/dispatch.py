"""Dispatch: N no-op units through abp next to the same N no-op tasks through a peer queue, side by side.

Arms (alternated in every round, so load drifts hit each arm alike):
  * abp: `abp create --jsonl ... --worker python --function noop_fn.py:anoop --concurrency 64` (not
    timed), then `abp start JOB --skip-test` timed until the job is COMPLETED (the real detached
    executor; every result stored). Reuses bench/multi_executor.py's run.
  * huey-thread / huey-greenlet: huey's `SqliteHuey` (SQLite, like abp's default store), N tasks
    enqueued (not timed), then the real `huey_consumer -w 64 -k thread|greenlet` timed until every
    task has run (bench/peers/huey_dispatch.py, in huey's own venv under /tmp/abp-peers).

Prints each arm's median units/s and CPU, and abp's ratio to each peer (goal of issue 16: >= 1.5x huey's
best configuration on SQLite).

    python bench/peers/dispatch.py                      # 20,000 units, 3 rounds
    python bench/peers/dispatch.py --units 5000 --rounds 5
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
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _common as c  # noqa: E402
import _venvs  # noqa: E402
import multi_executor  # noqa: E402

CONCURRENCY = 64


def abp_arm(units: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = multi_executor.run_one(units, CONCURRENCY, 1, None, 0.0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # children's CPU: the abp CLI processes and the executor (reaped when it exits)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"units_per_s": result["units_per_s"], "wall_s": result["wall_s"], "cpu_s": cpu}


def huey_arm(units: int, kind: str) -> dict:
    python = _venvs.peer_python("huey")
    with tempfile.TemporaryDirectory(prefix="abp-peer-huey-") as folder:
        out = subprocess.run([str(python), str(HERE / "huey_dispatch.py"), folder, str(units), str(CONCURRENCY), kind],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=["abp", "huey-thread", "huey-greenlet"])
    args = parser.parse_args()
    arms = {"abp": lambda: abp_arm(args.units), "huey-thread": lambda: huey_arm(args.units, "thread"),
            "huey-greenlet": lambda: huey_arm(args.units, "greenlet")}
    _venvs.peer_python("huey")  # install before the clock matters
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    loads = []
    for round_no in range(args.rounds):
        order = args.arms[round_no % len(args.arms):] + args.arms[:round_no % len(args.arms)]
        for arm in order:
            loads.append(os.getloadavg()[0])
            results[arm].append(arms[arm]())
            print(f"round {round_no + 1} {arm:<14} {results[arm][-1]['units_per_s']:8.0f} units/s", flush=True)
    print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}, {args.units:,} no-op units, concurrency "
          f"{CONCURRENCY}, {args.rounds} rounds, load average {min(loads):.1f}-{max(loads):.1f}")
    medians = {arm: statistics.median(r["units_per_s"] for r in rs) for arm, rs in results.items()}
    for arm, rs in results.items():
        cpu = statistics.median(r["cpu_s"] for r in rs)
        per_round = ", ".join(f"{r['units_per_s']:.0f}" for r in rs)
        print(f"{arm:<14} median {medians[arm]:8.0f} units/s   CPU median {cpu:6.2f} s   rounds: {per_round}")
    if "abp" in medians:
        for arm, value in medians.items():
            if arm != "abp":
                print(f"abp / {arm} = {medians['abp'] / value:.2f}")


if __name__ == "__main__":
    main()
