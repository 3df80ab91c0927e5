"""Scale-out on PostgreSQL with latency-bound units: 1, 2 and 4 executors on separate hosts and on one host.

Hosts are network namespaces (agentic_batch/testing/netns.py): each has its own veth to the root
namespace, its own hostname (a UTS namespace) and its own ABP_HOME, and reaches a private PostgreSQL
cluster (initdb in a temp dir, listening only on the veths' root-side addresses) over its veth. Each run
is a fresh database and a fresh job of `--units` units of a `python` worker that awaits `--sleep` s;
every executor brings `--per-executor` slots (the job's concurrency is that times the executors).

Arms, alternated within each round (the 1-executor run is the baseline of both):

* `1`: `abp start JOB --skip-test` on host 1;
* `hosts N`: the same on host 1, then `abp executor JOB --join` on hosts 2..N as soon as the job is RUNNING;
* `one host N`: `abp start JOB --skip-test --executors N` on host 1.

Wall = from `abp start` until the job row says COMPLETED (polled every 20 ms from the root namespace);
`exit` = until the last executor process has exited. The bench makes itself the child subreaper, so
every detached executor is reaped here and its CPU (and that of its children) is counted. The store
server's CPU is the private cluster's (postmaster plus exited backends). The breakdown reads the store:
first unit claimed, last unit finished, the job's finished_at.

Needs root (namespaces), iproute2, util-linux `unshare` and PostgreSQL's server binaries.

The package is byte-compiled first, as an installed wheel is: with PYTHONDONTWRITEBYTECODE set and no
caches, every CLI and executor process would compile all of it again (~1 s of CPU each under load).

Run (from the repository root, with the venv's python):
    python bench/multi_host.py                      # 3 rounds, 960 units x 200 ms, 8 slots per executor
    python bench/multi_host.py --rounds 5 --units 1920
    python bench/multi_host.py --nice 10            # on a shared machine: ahead of the other work
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _common as c

from agentic_batch.testing import netns

PR_SET_CHILD_SUBREAPER = 36
TICK = os.sysconf("SC_CLK_TCK")


class Reaper:
    """Reap every process that ends up ours (children, and as subreaper the detached executors) and add
    up their CPU (wait4's rusage includes what each reaped of its own children)."""

    def __init__(self) -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.cpu = 0.0
        self.codes: dict[int, int] = {}

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.cpu += usage.ru_utime + usage.ru_stime
            self.codes[pid] = os.waitstatus_to_exitcode(status)


def proc_cpu(pid: int, children: bool = True) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:13 + (2 if children else 0)])
    return ticks / TICK


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_one(hosts: netns.Hosts, reaper: Reaper, args: argparse.Namespace, executors: int, spread: bool,
            seq: int) -> dict[str, Any]:
    import psycopg

    cluster = hosts.cluster
    dbname = f"run{seq}"
    admin_dsn = f"postgresql://postgres@{hosts.hosts[0].root_ip}:{cluster.port}"
    with psycopg.connect(f"{admin_dsn}/abp", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    tmp = Path(tempfile.mkdtemp(prefix="abp-multihost-"))
    keep = False
    try:
        source = c.write_jsonl(tmp / "items.jsonl", args.units)
        noop = c.write_noop(tmp, sleep_s=args.sleep)
        used = hosts.hosts[:executors] if spread else hosts.hosts[:1]

        def env(host: netns.NamespaceHost) -> dict[str, str]:
            home = tmp / f"home-{host.name}"
            url = cluster.url(host.root_ip).replace("/abp?", f"/{dbname}?")
            return {**os.environ, "ABP_HOME": str(home), "ABP_DB_URL": url}

        created = subprocess.run(
            [sys.executable, "-m", "agentic_batch", "create", "--name", "scale", "--jsonl", str(source), "--key",
             "i", "--worker", "python", "--function", f"{noop}:anoop", "--concurrency",
             str(args.per_executor * executors), "--json"],
            env=env(used[0]), cwd=tmp, capture_output=True, text=True)
        if created.returncode != 0:
            raise SystemExit(f"abp create failed: {created.stderr.strip()}")
        import json

        job_id = int(json.loads(created.stdout)["job_id"])
        reaper.reap()
        cpu_before = reaper.cpu
        server_before = proc_cpu(postmaster_pid(cluster))
        conn = psycopg.connect(f"{admin_dsn}/{dbname}", autocommit=True)
        start_argv = [sys.executable, "-m", "agentic_batch", "start", str(job_id), "--skip-test"]
        if not spread and executors > 1:
            start_argv += ["--executors", str(executors)]
        t0_epoch = time.time()
        t0 = time.perf_counter()
        with open(tmp / "start.err", "wb") as err:
            subprocess.Popen(used[0].argv(*start_argv), env=env(used[0]), cwd=tmp, stdout=subprocess.DEVNULL,
                             stderr=err)
        joiners = list(used[1:])
        status, t_done = "", 0.0
        while True:
            reaper.reap()
            status = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
            if joiners and status != "CREATED":
                for host in joiners:
                    argv = host.argv(sys.executable, "-m", "agentic_batch", "executor", str(job_id), "--join")
                    with open(tmp / f"{host.name}.log", "wb") as out:
                        subprocess.Popen(argv, env=env(host), cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
                joiners = []
            if status in ("COMPLETED", "FAILED", "PAUSED", "CANCELLED"):
                t_done = time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"job {job_id} still {status} after 600 s; see {tmp}")
            time.sleep(0.02)
        pids = [row[0] for row in conn.execute("SELECT pid FROM executors WHERE job_id = %s", (job_id,))]
        while any(alive(pid) for pid in pids):
            reaper.reap()
            time.sleep(0.01)
        t_exit = time.perf_counter() - t0
        reaper.reap()
        first, last, count = conn.execute(
            "SELECT min(started_at), max(finished_at), count(*) FROM units WHERE job_id = %s AND status = 'COMPLETED'",
            (job_id,)).fetchone()
        started_at, finished_at = conn.execute("SELECT started_at, finished_at FROM jobs WHERE id = %s",
                                               (job_id,)).fetchone()
        hostnames = sorted({row[0] for row in conn.execute("SELECT host FROM executors WHERE job_id = %s", (job_id,))})
        conn.close()
        if status != "COMPLETED" or count != args.units:
            raise SystemExit(f"job {job_id} ended {status} with {count} of {args.units} units; see {tmp}")
        if len(hostnames) != (executors if spread else 1):
            raise SystemExit(f"job {job_id}'s executors ran on {hostnames}")
        time.sleep(0.2)  # the executors' backends to exit, so the server's CPU counts them
        return {"executors": executors, "spread": spread, "wall": t_done, "exit": t_exit,
                "running": finished_at - started_at, "to_running": started_at - t0_epoch,
                "to_first": first - t0_epoch, "work": last - first, "to_final": finished_at - last,
                "cpu": reaper.cpu - cpu_before, "server_cpu": proc_cpu(postmaster_pid(cluster)) - server_before,
                "load": os.getloadavg()[0]}
    except BaseException:
        print(f"(kept {tmp})")
        keep = True
        raise
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        with psycopg.connect(f"{admin_dsn}/abp", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def postmaster_pid(cluster: netns.PrivateCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--units", type=int, default=960)
    parser.add_argument("--per-executor", type=int, default=8, help="slots each executor brings")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each unit awaits")
    parser.add_argument("--executors", default="2,4", help="executor counts besides the 1-executor baseline")
    parser.add_argument("--nice", type=int, default=0,
                        help="raise this bench's priority (and so the cluster's, the CLIs' and the executors') by N "
                             "nice levels: on a machine shared with other work the figures then move less")
    args = parser.parse_args()
    if args.nice:
        os.nice(-args.nice)
    why = netns.unavailable()
    if why:
        raise SystemExit(f"multi_host: {why}")
    counts = [int(n) for n in args.executors.split(",")]
    # bytecode as an installed package has it: with PYTHONDONTWRITEBYTECODE set and no caches, every
    # CLI and executor process would compile the whole package again (~1 s of CPU each under load)
    import agentic_batch

    compileall.compile_dir(str(Path(agentic_batch.__file__).parent), quiet=1)
    ideal = args.units / args.per_executor * args.sleep
    print(f"# multi-host scale-out, {datetime.datetime.now():%Y-%m-%d %H:%M}, {c.machine()}")
    print(f"# {args.units} units x {args.sleep:g} s, {args.per_executor} slots per executor "
          f"(1 executor ideal {ideal:.1f} s), {args.rounds} rounds, nice -{args.nice}; load {os.getloadavg()[0]:.1f}")
    reaper = Reaper()
    rows: list[dict[str, Any]] = []
    with netns.Hosts(max(counts)) as hosts:
        seq = 0
        for rnd in range(args.rounds):
            arms = [(1, False)] + [(n, spread) for n in counts for spread in (True, False)]
            if rnd % 2:
                arms = arms[::-1]
            for n, spread in arms:
                seq += 1
                row = run_one(hosts, reaper, args, n, spread, seq)
                row["round"] = rnd
                rows.append(row)
                print(f"round {rnd + 1} {arm_name(n, spread):<12} wall {row['wall']:6.2f} s  exit {row['exit']:6.2f}"
                      f"  RUNNING +{row['to_running']:.2f}  first unit +{row['to_first']:.2f}  work {row['work']:6.2f}"
                      f"  final +{row['to_final']:.2f}  RUNNING->COMPLETED {row['running']:6.2f}"
                      f"  cpu {row['cpu']:5.2f}  server {row['server_cpu']:5.2f}  load {row['load']:.1f}",
                      flush=True)
    print()
    print(f"{'arm':<12} {'wall s':>7} {'speed-up':>8} {'job s':>6} {'speed-up':>8} {'exit s':>7} {'RUNNING':>7} "
          f"{'1st unit':>8} {'work':>6} {'final':>6} {'CPU s':>6} {'server':>6}")
    for n, spread in [(1, False)] + [(n, s) for n in counts for s in (True, False)]:
        mine = [r for r in rows if r["executors"] == n and (r["spread"] == spread or n == 1)]

        def speedup(key: str, runs: list[dict[str, Any]] = mine) -> float:
            return statistics.median(base[key] / r[key] for r in runs
                                     for base in rows if base["executors"] == 1 and base["round"] == r["round"])

        def med(key: str, runs: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in runs)

        print(f"{arm_name(n, spread):<12} {med('wall'):7.2f} {speedup('wall'):7.2f}x {med('running'):6.2f} "
              f"{speedup('running'):7.2f}x {med('exit'):7.2f} {med('to_running'):7.2f} {med('to_first'):8.2f} "
              f"{med('work'):6.2f} {med('to_final'):6.2f} {med('cpu'):6.2f} {med('server_cpu'):6.2f}")
    print("# wall: `abp start` -> COMPLETED seen; job: the job's own RUNNING -> COMPLETED (started_at to finished_at);"
          " RUNNING / 1st unit: when the job turned RUNNING / its first unit was claimed, from `abp start`; work: first"
          " claim to last result; final: last result to COMPLETED; exit: until the last executor exited")
    print(f"# speed-up: median over rounds of (that round's 1-executor time / the arm's); "
          f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def arm_name(n: int, spread: bool) -> str:
    return "1" if n == 1 else (f"hosts {n}" if spread else f"one host {n}")


if __name__ == "__main__":
    main()
