"""Throughput of the whole system with a no-op `python` worker, next to a bare asyncio loop.

What it measures:
  * system: `abp create` a job over a JSONL source of N items with `--worker python --function
    noop_fn.py:anoop --concurrency C`, then `abp start JOB --skip-test` (the real detached executor)
    and wait until the job is COMPLETED. Figures: units/s from the moment `abp start` is invoked to
    the job's finished_at, the same rate over the executor's working span (first to last unit
    finished, i.e. without process start-up), and the time from `abp start` to the first completed
    unit.
  * bare: the same N calls of the same function in one asyncio loop with a semaphore of C and no
    store (a sync function goes through asyncio.to_thread, as the python worker does).
  * overhead = bare units/s / system units/s.

Run (from the repository root, with the venv's python):
    python bench/throughput.py                      # 20,000 units, concurrency 64, async no-op
    python bench/throughput.py --sync               # the sync no-op (run in a thread per call)
    python bench/throughput.py --units 2000 --py-spy /tmp/exec.txt   # also sample the executor

Uses a throwaway ABP_HOME; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c
import spy_report


def bare_loop(noop_file: Path, func_name: str, units: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for `units` calls of the function under a semaphore, no store."""
    spec = importlib.util.spec_from_file_location("bench_noop_bare", noop_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    func = getattr(module, func_name)
    is_async = asyncio.iscoroutinefunction(func)

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(payload: dict) -> None:
            async with sem:
                if is_async:
                    await func(payload)
                else:
                    await asyncio.to_thread(func, payload)

        await asyncio.gather(*(one({"i": i}) for i in range(units)))

    t0, cpu0 = time.perf_counter(), time.process_time()
    asyncio.run(main())
    return time.perf_counter() - t0, time.process_time() - cpu0


def system_run(tmp: Path, noop_file: Path, func_name: str, units: int, concurrency: int,
               py_spy: Path | None, rate: int) -> dict:
    source = c.write_jsonl(tmp / "items.jsonl", units)
    job_id, create_s = c.create_job("--name", "bench-throughput", "--jsonl", str(source),
                                    "--worker", "python", "--function", f"{noop_file}:{func_name}",
                                    "--concurrency", str(concurrency), cwd=tmp)
    orch = c.orchestrator()
    t_start = time.time()
    out, start_cli_s = c.abp("start", str(job_id), "--skip-test", "--json", cwd=tmp)
    pid = json.loads(out)["executor"]["pid"]
    spy = spy_report.start_py_spy(pid, py_spy, rate) if py_spy else None
    watch = c.ProcWatch(pid)
    watch.sample()
    job = c.wait_final(orch, job_id, poll=0.05, watch=watch)
    if spy is not None:
        spy_report.stop_py_spy(spy)
    if job.status != "COMPLETED":
        raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
    first, last, done = c.query_one("SELECT MIN(finished_at), MAX(finished_at), COUNT(*) FROM units "
                                    "WHERE job_id = ? AND status = 'COMPLETED'", job_id)
    claimed = c.query_one("SELECT MIN(started_at) FROM units WHERE job_id = ?", job_id)[0]
    registered = c.query_one("SELECT MIN(started_at) FROM executors WHERE job_id = ?", job_id)[0]
    assert done == units, (done, units)
    total_s = job.finished_at - t_start
    return {"job_id": job_id, "create_s": create_s, "start_cli_s": start_cli_s, "total_s": total_s,
            "first_unit_s": first - t_start, "first_claim_s": claimed - t_start, "span_s": last - first,
            "executor_pid": pid, "executor_cpu_s": watch.cpu_s,
            "startup_cpu_s": watch.first_cpu_s or 0.0, "registered_s": registered - t_start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sync", action="store_true",
                    help="use the sync no-op (runs in a thread) instead of async")
    ap.add_argument("--sleep-ms", type=float, default=0.0, help="make the no-op sleep this long")
    ap.add_argument("--py-spy", type=Path, help="sample the executor with py-spy into this raw file")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    func_name = "noop" if args.sync else "anoop"

    print(f"throughput: {args.units:,} units, concurrency {args.concurrency}, {func_name} "
          f"(sleep {args.sleep_ms:g} ms) — {c.machine()}, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    with c.temp_home(keep=args.keep) as tmp:
        noop_file = c.write_noop(tmp, args.sleep_ms / 1000)
        sys_fig = system_run(tmp, noop_file, func_name, args.units, args.concurrency, args.py_spy, args.rate)
        bare_s, bare_cpu = bare_loop(noop_file, func_name, args.units, args.concurrency)

    n = args.units
    system_rate = n / sys_fig["total_s"]
    working_rate = n / sys_fig["span_s"] if sys_fig["span_s"] > 0 else float("inf")
    bare_rate = n / bare_s
    print(f"  abp create (CLI, {n:,} units)            {sys_fig['create_s']:8.2f} s")
    print(f"  abp start --skip-test returned after     {sys_fig['start_cli_s']:8.2f} s")
    print(f"  start -> executor registered in store    {sys_fig['registered_s']:8.2f} s")
    print(f"  start -> first unit claimed              {sys_fig['first_claim_s']:8.2f} s")
    print(f"  start -> first unit completed            {sys_fig['first_unit_s']:8.2f} s")
    print(f"  start -> job COMPLETED                   {sys_fig['total_s']:8.2f} s")
    print(f"  system units/s (start -> COMPLETED)      {system_rate:10,.0f}")
    print(f"  system units/s (first -> last finished)  {working_rate:10,.0f}")
    cpu, startup_cpu = sys_fig["executor_cpu_s"], sys_fig["startup_cpu_s"]
    print(f"  executor CPU (user+sys), whole life      {cpu:8.2f} s "
          f"(start-up {startup_cpu:.2f} s), {1000 * (cpu - startup_cpu) / n:.3f} ms per unit after start-up")
    print(f"  bare asyncio loop units/s (no store)     {bare_rate:10,.0f}   ({bare_s:.3f} s, "
          f"{bare_cpu:.3f} s CPU, {1000 * bare_cpu / n:.4f} ms per call)")
    print(f"  overhead ratio bare/system               {bare_rate / system_rate:10,.1f}x "
          f"(working span: {bare_rate / working_rate:,.1f}x; CPU per unit: "
          f"{(cpu - startup_cpu) / max(bare_cpu, 1e-9):,.1f}x)")
    if args.py_spy:
        print()
        spy_report.report(args.py_spy)


if __name__ == "__main__":
    main()
