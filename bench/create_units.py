"""Time to create a large job: enumerate the source, render-check the prompt, bulk-insert the units.

What it measures, for a JSONL source and a CSV source of N items (default 100,000), and a `--files`
glob over F small files (default 20,000; `--files 0` skips it):
  * CLI: wall time of the `abp create ...` process (interpreter start, imports and store open
    included), with a `command` worker and a prompt template (so every item is a real unit).
  * service: `Orchestrator().create(spec)` in-process (the same work without process start-up).
Each run uses a fresh store, so no run is slowed or sped up by rows an earlier one left.

Run (from the repository root, with the venv's python):
    python bench/create_units.py                    # 100,000 JSONL + CSV items, 20,000 files
    python bench/create_units.py --units 10000 --files 0

Uses a throwaway ABP_HOME per measurement; nothing under ~/.agentic-batch is touched.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

PROMPT = "Summarise {{ title }}"
FILE_PROMPT = "Summarise {{ path }}"


def cli_create(source_flags: list[str], prompt: str, cwd: Path) -> tuple[int, float]:
    job_id, seconds = c.create_job("--name", "bench-create", *source_flags, "--command", "true",
                                   "--prompt", prompt, cwd=cwd)
    return job_id, seconds


def service_create(source: dict, prompt: str, cwd: Path) -> tuple[int, float]:
    orch = c.orchestrator()  # opening (and migrating) the store is not part of the timed span
    spec = {"name": "bench-create", "source": source, "prompt": prompt, "worker": "command",
            "worker_options": {"command": "true"}}
    t0 = time.perf_counter()
    result = orch.create(spec, cwd=cwd)
    return result.units, time.perf_counter() - t0


def measure(label: str, n: int, make_source, cli_flags, service_source, prompt: str, rows: list) -> None:
    """Build the source once (outside the timing), then time the CLI and the service on fresh stores."""
    with c.temp_home() as data_dir:
        make_source(data_dir)
        for how in ("CLI", "service"):
            home = data_dir / f"home-{how}"
            os.environ["ABP_HOME"] = str(home)
            if how == "CLI":
                job_id, seconds = cli_create(cli_flags(data_dir), prompt, data_dir)
                units = c.query_one("SELECT COUNT(*) FROM units WHERE job_id = ?", job_id)[0]
            else:
                units, seconds = service_create(service_source(data_dir), prompt, data_dir)
            if units != n:
                raise SystemExit(f"{label} {how}: expected {n} units, got {units}")
            db_mb = sum(p.stat().st_size for p in home.glob("batch.db*")) / 2**20
            rows.append((label, how, units, seconds, units / seconds, db_mb))
            print(f"  {label:<6} {how:<8} {units:>9,} units {seconds:8.2f} s "
                  f"{units / seconds:>10,.0f} units/s, store {db_mb:6.1f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000, help="items in the JSONL and CSV sources")
    ap.add_argument("--files", type=int, default=20_000, help="small files for the --files source (0: skip)")
    args = ap.parse_args()
    n, f = args.units, args.files
    print(f"create_units: {n:,} JSONL/CSV items, {f:,} files — {c.machine()}, "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}")
    rows: list = []
    measure("jsonl", n, lambda d: c.write_jsonl(d / "items.jsonl", n),
            lambda d: ["--jsonl", str(d / "items.jsonl")],
            lambda d: {"kind": "jsonl", "path": str(d / "items.jsonl")}, PROMPT, rows)
    measure("csv", n, lambda d: c.write_csv(d / "items.csv", n),
            lambda d: ["--csv", str(d / "items.csv")],
            lambda d: {"kind": "csv", "path": str(d / "items.csv")}, PROMPT, rows)
    if f:
        measure("files", f, lambda d: c.write_files(d / "tree", f),
                lambda d: ["--files", "**/*.txt", "--root", str(d / "tree")],
                lambda d: {"kind": "files", "glob": "**/*.txt", "root": str(d / "tree")}, FILE_PROMPT, rows)
    with c.temp_home():
        _, floor = c.abp("list", "--json")
    print(f"  (process floor: `abp list --json` on a fresh store takes {floor:.2f} s)")
    print("\n| source | via | units | seconds | units/s |\n|---|---|---:|---:|---:|")
    for label, how, units, seconds, rate, _ in rows:
        print(f"| {label} | {how} | {units:,} | {seconds:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
