"""Dispatch: N no-op units through abp next to the same N no-op tasks through peer queues, side by side.

Arms (alternated in every round, so load drifts hit each arm alike):
  * abp-sqlite-1 / abp-sqlite-N, abp-pg-1 / abp-pg-N: `abp create --jsonl ... --worker python --function
    noop_fn.py:anoop --concurrency 64` (not timed), then `abp start JOB --skip-test --executors E` timed
    until the job is COMPLETED (real detached executors; every result stored). SQLite in a throwaway
    ABP_HOME; PostgreSQL in a schema of its own (dropped after) on --pg.
  * huey-thread / huey-greenlet: huey's `SqliteHuey` (SQLite, like abp's default store), N tasks
    enqueued (not timed), then the real `huey_consumer -w 64 -k thread|greenlet` timed until every
    task has run (bench/peers/huey_dispatch.py, in huey's own venv under /tmp/abp-peers).
  * pgqueuer: N jobs enqueued into a database of its own on the same PostgreSQL server (not timed),
    then P consumer processes of Q asyncpg QueueManagers, dequeue batch B, in drain mode, timed until
    they exit (bench/peers/pgqueuer_dispatch.py, in pgqueuer's own venv).

CPU: abp's is `abp start` plus every executor (this script is their subreaper, so the detached
executors' CPU lands in its RUSAGE_CHILDREN once they exit and are reaped); the peers' is their
consumers'. Prints each arm's median units/s, CPU and CPU per unit, and abp's ratios (goal of issue
16: best abp on SQLite >= 1.5x huey's best; abp on PostgreSQL >= 2x pgqueuer).

    python bench/peers/dispatch.py                      # 20,000 units, 3 rounds, every arm
    python bench/peers/dispatch.py --units 5000 --rounds 5 --arms abp-sqlite-1 abp-sqlite-N huey-thread
    mkdir /tmp/abp-before && git archive main | tar -x -C /tmp/abp-before && python -m compileall -q /tmp/abp-before
    python bench/peers/dispatch.py --before /tmp/abp-before --arms abp-sqlite-1 huey-greenlet   # + before-sqlite-1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
import _common as c  # noqa: E402
import _venvs  # noqa: E402

from agentic_batch.engine.procs import set_child_subreaper  # noqa: E402

CONCURRENCY = 64
ALL_ARMS = ["abp-sqlite-1", "abp-sqlite-N", "abp-pg-1", "abp-pg-N", "huey-thread", "huey-greenlet", "pgqueuer"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reap_orphans(deadline: float) -> None:
    """Wait for the executors (re-parented to us) to exit, so their CPU is counted."""
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


@contextlib.contextmanager
def tree(path: Path | None) -> Iterator[None]:
    """With a path: the abp processes (the CLI, and the executors it starts) import that checkout
    (PYTHONPATH), e.g. a `git archive` of main, for a before/after arm in the same run."""
    if path is None:
        yield
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def abp_arm(units: int, executors: int, pg_url: str | None, checkout: Path | None = None) -> dict:
    with c.temp_home() as tmp, c.pg_store(pg_url), tree(checkout):
        source = c.write_jsonl(tmp / "items.jsonl", units)
        noop = c.write_noop(tmp)
        job_id, _ = c.create_job("--name", "bench-dispatch", "--jsonl", str(source), "--key", "i", "--worker",
                                 "python", "--function", f"{noop}:anoop", "--concurrency", str(CONCURRENCY),
                                 cwd=tmp)
        _reap_orphans(time.monotonic() + 1)
        orch = c.orchestrator()
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        c.abp("start", str(job_id), "--skip-test", "--executors", str(executors), cwd=tmp)
        job = c.wait_final(orch, job_id, poll=0.05)
        wall = time.perf_counter() - t0
        status = orch.status(job_id)
        orch.store.close()
        _reap_orphans(time.monotonic() + 60)
        cpu = _children_cpu() - cpu0
        assert job.status == "COMPLETED" and status.completed == units, status
        return {"wall_s": wall, "units_per_s": units / wall, "cpu_s": cpu}


def huey_arm(units: int, kind: str) -> dict:
    python = _venvs.peer_python("huey")
    with tempfile.TemporaryDirectory(prefix="abp-peer-huey-") as folder:
        out = subprocess.run([str(python), str(HERE / "huey_dispatch.py"), folder, str(units), str(CONCURRENCY), kind],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pgqueuer_arm(units: int, pg_url: str, procs: int, managers: int, batch: int) -> dict:
    python = _venvs.peer_python("pgqueuer")
    out = subprocess.run([str(python), str(HERE / "pgqueuer_dispatch.py"), pg_url, "abp_peer_pgqueuer", str(units),
                          str(procs), str(managers), str(batch)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] == units, result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=ALL_ARMS, choices=ALL_ARMS)
    parser.add_argument("--executors", type=int, default=os.cpu_count() or 2, help="N of the abp-*-N arms")
    parser.add_argument("--pg", default=os.environ.get("ABP_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: ABP_TEST_POSTGRES_URL)")
    parser.add_argument("--before", type=Path, help="a checkout (e.g. `git archive main`, byte-compiled) to run "
                        "as before-* twins of the abp arms, alternated with them")
    parser.add_argument("--pgq", default="1,5,50", help="pgqueuer consumer processes, QueueManagers each, "
                        "dequeue batch (the best of a sweep here: 1,5,50)")
    args = parser.parse_args()
    if any(arm in ("abp-pg-1", "abp-pg-N", "pgqueuer") for arm in args.arms) and not args.pg:
        raise SystemExit("give --pg URL or set ABP_TEST_POSTGRES_URL for the PostgreSQL arms")
    set_child_subreaper()
    procs, managers, batch = (int(x) for x in args.pgq.split(","))
    n = args.executors
    arms = {"abp-sqlite-1": lambda: abp_arm(args.units, 1, None),
            "abp-sqlite-N": lambda: abp_arm(args.units, n, None),
            "abp-pg-1": lambda: abp_arm(args.units, 1, args.pg),
            "abp-pg-N": lambda: abp_arm(args.units, n, args.pg),
            "huey-thread": lambda: huey_arm(args.units, "thread"),
            "huey-greenlet": lambda: huey_arm(args.units, "greenlet"),
            "pgqueuer": lambda: pgqueuer_arm(args.units, args.pg, procs, managers, batch)}
    if args.before is not None:
        before = args.before.resolve()
        if not (before / "agentic_batch").is_dir():
            raise SystemExit(f"--before {args.before}: no agentic_batch package there")
        for arm in [a for a in args.arms if a.startswith("abp-")]:
            twin = "before-" + arm[len("abp-"):]
            e = n if arm.endswith("-N") else 1
            pg = args.pg if "-pg-" in arm else None
            arms[twin] = functools.partial(abp_arm, args.units, e, pg, before)
            args.arms.insert(args.arms.index(arm) + 1, twin)
    for peer in ("huey", "pgqueuer"):  # install before the clock matters
        if any(arm.startswith(peer) for arm in args.arms):
            _venvs.peer_python(peer)
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    loads = []
    for round_no in range(args.rounds):
        order = args.arms[round_no % len(args.arms):] + args.arms[:round_no % len(args.arms)]
        for arm in order:
            loads.append(os.getloadavg()[0])
            results[arm].append(arms[arm]())
            r = results[arm][-1]
            print(f"round {round_no + 1} {arm:<17} {r['units_per_s']:8.0f} units/s  CPU {r['cpu_s']:6.2f} s",
                  flush=True)
    print(f"\n{datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}, {args.units:,} no-op units, concurrency "
          f"{CONCURRENCY}, N = {n} executors, pgqueuer {procs} process(es) x {managers} managers x batch {batch}, "
          f"{args.rounds} rounds, load average {min(loads):.1f}-{max(loads):.1f}")
    medians = {arm: statistics.median(r["units_per_s"] for r in rs) for arm, rs in results.items()}
    for arm, rs in results.items():
        cpu = statistics.median(r["cpu_s"] for r in rs)
        per_round = ", ".join(f"{r['units_per_s']:.0f}" for r in rs)
        print(f"{arm:<17} median {medians[arm]:8.0f} units/s   CPU median {cpu:6.2f} s "
              f"({cpu / args.units * 1e6:5.0f} us/unit)   rounds: {per_round}")

    def best(prefix: str) -> tuple[str, float] | None:
        found = [(arm, value) for arm, value in medians.items() if arm.startswith(prefix)]
        return max(found, key=lambda kv: kv[1]) if found else None

    for mine, theirs, goal in (("abp-sqlite", "huey", 1.5), ("abp-pg", "pgqueuer", 2.0),
                               ("before-sqlite", "huey", 1.5), ("before-pg", "pgqueuer", 2.0)):
        a, b = best(mine), best(theirs)
        if a and b:
            print(f"{a[0]} / {b[0]} = {a[1] / b[1]:.2f} (goal >= {goal})")
    for arm in [a for a in results if a.startswith("before-")]:
        mine = "abp-" + arm[len("before-"):]
        cpu_now = statistics.median(r["cpu_s"] for r in results[mine])
        cpu_then = statistics.median(r["cpu_s"] for r in results[arm])
        print(f"{mine} / {arm}: units/s {medians[mine] / medians[arm]:.2f}, CPU {cpu_now / cpu_then:.2f}")


if __name__ == "__main__":
    main()
