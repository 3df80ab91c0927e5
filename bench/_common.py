"""Helpers shared by the bench/ scripts: a throwaway ABP_HOME, the `abp` CLI as a subprocess, sources
and no-op worker functions written to temp files, and waiting for a job to end.

Every script runs inside `temp_home()`, so nothing touches ~/.agentic-batch; the directory (store,
executor logs, sources) is deleted on exit.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NOOP_SOURCE = '''\
"""No-op worker functions for bench/: return at once (or after SLEEP_S)."""
import asyncio
import time

SLEEP_S = {sleep_s!r}


async def anoop(payload):
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    return None


def noop(payload):
    if SLEEP_S:
        time.sleep(SLEEP_S)
    return None
'''


@contextlib.contextmanager
def temp_home(keep: bool = False) -> Iterator[Path]:
    """A fresh ABP_HOME (and default SQLite store) for the duration of the block."""
    saved = {k: os.environ.get(k) for k in ("ABP_HOME", "ABP_DB_URL", "ABP_SKIP_TEST")}
    tmp = tempfile.mkdtemp(prefix="abp-bench-")
    os.environ["ABP_HOME"] = str(Path(tmp) / "home")
    os.environ.pop("ABP_DB_URL", None)
    os.environ.pop("ABP_SKIP_TEST", None)
    try:
        yield Path(tmp)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep:
            print(f"(kept {tmp})")
        else:
            subprocess.run(["rm", "-rf", tmp], check=False)


@contextlib.contextmanager
def pg_store(pg_url: str | None) -> Iterator[None]:
    """With a URL: the store in a schema of its own on that server (ABP_DB_URL points at it), dropped
    afterwards. Without one: the default SQLite store of the current ABP_HOME."""
    if not pg_url:
        yield
        return
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    schema = f"abp_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    os.environ["ABP_DB_URL"] = f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        yield
    finally:
        os.environ.pop("ABP_DB_URL", None)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def abp(*args: str, cwd: Path | None = None) -> tuple[str, float]:
    """Run `python -m agentic_batch ARGS` (the `abp` CLI); returns (stdout, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agentic_batch", *args], capture_output=True, text=True,
                          check=False,
                          cwd=cwd, env=os.environ.copy())
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"abp {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout, elapsed


def create_job(*args: str, cwd: Path | None = None) -> tuple[int, float]:
    """`abp create ... --json`; returns (job id, wall seconds of the process)."""
    out, elapsed = abp("create", *args, "--json", cwd=cwd)
    return int(json.loads(out)["job_id"]), elapsed


def write_jsonl(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"i": i, "title": f"item {i}", "body": "lorem ipsum dolor sit amet"}) + "\n")
    return path


def write_csv(path: Path, n: int) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["i", "title", "body"])
        for i in range(n):
            writer.writerow([i, f"item {i}", "lorem ipsum dolor sit amet"])
    return path


def write_files(root: Path, n: int, per_dir: int = 1000) -> Path:
    for i in range(n):
        folder = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.txt").write_text(f"file {i}\n")
    return root


def write_noop(folder: Path, sleep_s: float = 0.0) -> Path:
    path = folder / "noop_fn.py"
    path.write_text(NOOP_SOURCE.format(sleep_s=sleep_s))
    return path


def orchestrator() -> Any:
    """An in-process Orchestrator on the current ABP_HOME (imported late: ABP_HOME must be set)."""
    from agentic_batch.service import Orchestrator

    return Orchestrator()


class ProcWatch:
    """Samples a process from /proc while it lives: peak VmHWM/VmRSS and CPU seconds (user+sys).

    The executor exits when its job ends, so the last sample taken before that is what we keep.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hwm_kb = self.rss_kb = self.last_rss_kb = 0
        self.cpu_s = 0.0
        self.first_cpu_s: float | None = None  # CPU already spent at the first sample (start-up)
        self.samples = 0
        self._tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> bool:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        for line in status.splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                kb = int(line.split()[1])
                if line.startswith("VmHWM:"):
                    self.hwm_kb = max(self.hwm_kb, kb)
                else:
                    self.rss_kb, self.last_rss_kb = max(self.rss_kb, kb), kb
        fields = stat.rpartition(")")[2].split()
        if fields[0] == "Z":  # exited, not yet reaped: counters are final but memory is gone
            return False
        self.cpu_s = (int(fields[11]) + int(fields[12])) / self._tick
        if self.first_cpu_s is None:
            self.first_cpu_s = self.cpu_s
        self.samples += 1
        return True

    @property
    def peak_mb(self) -> float:
        return max(self.hwm_kb, self.rss_kb) / 1024


def wait_final(orch: Any, job_id: int, timeout: float = 3600.0, poll: float = 0.1,
               watch: ProcWatch | None = None) -> Any:
    """Poll the job row (cheap) until a final status; returns the JobRecord."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watch is not None:
            watch.sample()
        job = orch.store.jobs.get_job(job_id)
        if job.status in ("COMPLETED", "FAILED", "CANCELLED", "PAUSED"):
            return job
        time.sleep(poll)
    raise SystemExit(f"job {job_id} did not finish within {timeout:g}s")


def db_path() -> Path:
    return Path(os.environ["ABP_HOME"]) / "batch.db"


def query_one(sql: str, *params: Any) -> Any:
    """A read-only SQL probe for figures the service does not expose (first finish time)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path()}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchone()


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of `runs` calls of `fn`, in seconds: the figure least disturbed by a noisy machine."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{platform.machine()}")
