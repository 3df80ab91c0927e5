"""The `openai` worker against a server that enforces a requests-per-minute limit: achieved rate, 429s,
failed units.

What it measures: the scripted OpenAI-compatible server
(`python -m agentic_batch.testing.openai_server --latency 0.05 --rpm-limit 1200 --scenario echo`, a
subprocess on 127.0.0.1) admits at most 1,200 requests in any rolling 60 s window and answers the rest
429 with `retry-after` (seconds until its window frees a slot). A JSONL job of N units (default 3,000,
one model call each) for the `openai` worker runs at concurrency 100 with `--max-retries 10`, in two
variants, each with a fresh server and ABP_HOME:

  * gate: `--rpm 1200` (abp's own rolling-window gate, awaited before every model call);
  * no-gate: no `--rpm`; only the server's 429 + retry-after, the engine's retries, and adaptive
    concurrency (the in-flight limit halves on a burst of 429s and grows back one slot per 10 s).

Figures per variant: duration (executor's first claim to last unit finished; and from `abp start`
to the job's finished_at); the server's request count and its count of 429s; achieved
requests/minute = requests the server admitted / duration, as a share of the limit;
failed units (must be 0); attempts per unit and how often adaptive concurrency halved the in-flight limit.

A rolling window lets a client send the whole limit at once, so N requests cannot finish sooner than
floor((N - 1) / limit) x 60 s (120 s for 3,000 at 1,200/min), and N / duration can exceed the limit
when the job spans only a few windows; the duration against that bound is the fairer efficiency figure.

Run (from the repository root, with the venv's python):
    python bench/openai_rpm.py                          # both variants, 3,000 units
    python bench/openai_rpm.py --variants gate --units 1500

Uses a throwaway ABP_HOME per variant; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _agents as a
import _common as c


def one_variant(name: str, units: int, concurrency: int, latency: float, limit: int, keep: bool) -> dict:
    extra = ["--max-retries", "10"] + (["--rpm", str(limit)] if name == "gate" else [])
    with c.temp_home(keep=keep) as tmp, \
            a.server("openai_server", "--latency", str(latency), "--rpm-limit", str(limit),
                     "--scenario", "echo") as srv:
        res = a.run_openai_job(srv.url, tmp, f"openai-rpm-{name}", units, concurrency, *extra, timeout=900)
        srv.stop()
        res["server"] = srv.counts()
        with contextlib.closing(sqlite3.connect(f"file:{c.db_path()}?mode=ro", uri=True)) as conn:
            finishes = [row[0] for row in conn.execute(
                "SELECT finished_at FROM units WHERE job_id = ? AND status = 'COMPLETED'", (res["job_id"],))]
            buckets: dict[int, int] = {}
            for t in finishes:
                key = int((t - res["first_start"]) // 10)
                buckets[key] = buckets.get(key, 0) + 1
            res["per_10s"] = [buckets.get(k, 0) for k in range(max(buckets) + 1)] if buckets else []
            res["halving_times"] = [round(row[0] - res["first_start"], 1) for row in conn.execute(
                "SELECT ts FROM logs WHERE job_id = ? AND message LIKE 'rate limited: in-flight limit lowered%' "
                "ORDER BY ts", (res["job_id"],))]
            res["halvings"] = conn.execute("SELECT COUNT(*) FROM logs WHERE job_id = ? AND message LIKE "
                                           "'rate limited: in-flight limit lowered%'", (res["job_id"],)).fetchone()[0]
            res["lowest_limit"] = conn.execute(
                "SELECT message FROM logs WHERE job_id = ? AND message LIKE 'rate limited:%' ORDER BY id DESC LIMIT 1",
                (res["job_id"],)).fetchone()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--limit", type=int, default=1200, help="the server's requests per minute")
    ap.add_argument("--variants", nargs="+", choices=["gate", "no-gate"], default=["gate", "no-gate"])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    bound = ((args.units - 1) // args.limit) * 60.0
    print(f"# openai worker vs a {args.limit}/min server: {args.units} units, concurrency {args.concurrency}, "
          f"latency {args.latency}s, --max-retries 10; lower bound on duration {bound:.0f} s")
    print(f"# {c.machine()}, {datetime.datetime.now().isoformat(timespec='seconds')}")
    for name in args.variants:
        r = one_variant(name, args.units, args.concurrency, args.latency, args.limit, args.keep)
        span = r["last_finish"] - r["first_start"]
        wall = r["finished"] - r["t0"]
        requests, limited = r["server"].get("requests", 0), r["server"].get("rate_limited", 0)
        admitted = requests - limited
        rpm = admitted / (span / 60)
        failed = r["counts"].get("FAILED", 0)
        against = f"; {span / bound:.3f}x the {bound:.0f} s bound" if bound else ""
        print(f"{name:8s} {r['status']}: {r['counts']}; failed units {failed}; duration {span:.1f} s "
              f"(abp start to finished_at {wall:.1f} s{against})")
        print(f"{'':8s} server: {requests} requests, {limited} answered 429 "
              f"({100 * limited / max(requests, 1):.1f}%), {admitted} admitted; achieved {rpm:.0f} requests/min "
              f"= {100 * rpm / args.limit:.1f}% of the limit")
        print(f"{'':8s} attempts {r['attempts']} for {args.units} units; adaptive halvings {r['halvings']}"
              + (f" (last: {r['lowest_limit'][0]})" if r["lowest_limit"] else "")
              + f"; executor CPU {r['executor_cpu_s']:.1f} s")
        print(f"{'':8s} halvings at (s after first claim): {r['halving_times']}")
        print(f"{'':8s} units finished per 10 s: {r['per_10s']}", flush=True)
        if failed:
            print(f"{'':8s} FAILED UNITS: {failed}")


if __name__ == "__main__":
    main()
