"""Helpers for the agent-worker benchmarks (bench/claude_vs_parallel.py, openai_latency.py,
openai_rpm.py): the scripted model servers as subprocesses, a cheap job-status probe, and CPU
accounting of a process read from /proc.

The servers run in their own process (not a thread of the benchmark) so that their work does not
share a GIL with anything we time; they do share the machine's cores with the executor, as a real
local model server would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c
from spy_report import read_stacks, start_py_spy, stop_py_spy

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "PAUSED")


@dataclass
class ServerProc:
    """A scripted server in a subprocess: `url` once it listens, `stats` (its last stdout line) once stopped."""

    proc: subprocess.Popen[str]
    url: str
    stats: str = ""
    extra_output: list[str] = field(default_factory=list)
    #: CPU seconds the server process used, read from /proc just before stopping it.
    cpu_s: float = 0.0

    def stop(self) -> str:
        """SIGTERM and wait; the OpenAI server prints `requests=N rate_limited=M` on the way out."""
        if self.proc.poll() is None:
            watch = CpuWatch(self.proc.pid)
            if watch.sample():
                self.cpu_s = watch.self_s
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = [line for line in (out or "").splitlines() if line.strip()]
        self.extra_output = lines
        self.stats = lines[-1] if lines else ""
        return self.stats

    def counts(self) -> dict[str, int]:
        """`requests=N rate_limited=M` as a dict (OpenAI server only)."""
        return {k: int(v) for k, v in (part.split("=", 1) for part in self.stats.split() if "=" in part)}


@contextlib.contextmanager
def server(module: str, *args: str) -> Iterator[ServerProc]:
    """Start `python -m agentic_batch.testing.<module> --port 0 ARGS`; stop it (and collect stats) on exit."""
    proc = subprocess.Popen([sys.executable, "-m", f"agentic_batch.testing.{module}", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"{module} did not start: {url}{proc.stdout.read()}")
    srv = ServerProc(proc, url)
    try:
        yield srv
    finally:
        srv.stop()


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to tell how loaded the box was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def job_row(job_id: int) -> tuple[str, float | None, float | None]:
    """(status, started_at, finished_at) straight from SQLite: cheaper than the service for polling."""
    with contextlib.closing(sqlite3.connect(f"file:{c.db_path()}?mode=ro", uri=True, timeout=30)) as conn:
        row = conn.execute("SELECT status, started_at, finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0], row[1], row[2]


class CpuWatch:
    """CPU seconds of one process (utime+stime) and of its reaped children (cutime+cstime), from /proc.

    The executor exits when its job ends, so the last sample before that is the one we keep.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.self_s = self.children_s = 0.0
        self._tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):
            return False
        self.self_s = (int(fields[11]) + int(fields[12])) / self._tick
        self.children_s = (int(fields[13]) + int(fields[14])) / self._tick
        return True


def wait_job(job_id: int, timeout: float, poll: float = 0.1, watch: CpuWatch | None = None,
             pid: int | None = None) -> tuple[str, float | None, float | None]:
    """Poll until the job is final; on timeout kill the executor `pid` (if given) and exit."""
    deadline = time.monotonic() + timeout
    while True:
        if watch is not None:
            watch.sample()
        row = job_row(job_id)
        if row[0] in FINAL:
            return row
        if time.monotonic() > deadline:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise SystemExit(f"job {job_id} still {row[0]} after {timeout:g}s")
        time.sleep(poll)


def wait_executor_gone(pid: int, timeout: float = 30.0) -> None:
    """The executor exits shortly after the job's final status is written; wait for that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)


def unit_counts(job_id: int) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{c.db_path()}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM units WHERE job_id = ? GROUP BY status", (job_id,))
        return dict(rows.fetchall())


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run_openai_job(server_url: str, tmp: Path, name: str, units: int, concurrency: int, *extra: str,
                   timeout: float = 900.0, model: str = "gpt-4o-mini", py_spy: Path | None = None,
                   worker: str = "openai") -> dict:
    """Create a JSONL job of `units` rows for the `openai` (or `anthropic`) worker against `server_url`,
    start it with --skip-test, wait until it is final; return timings (epoch seconds), unit counts and
    executor CPU.

    `abp start` and the executor get OPENAI_API_KEY / ANTHROPIC_API_KEY=dummy; prices are given
    explicitly so no price table lookup matters. `extra` goes to `abp create` (e.g. --rpm 1200
    --max-retries 10).
    """
    source = c.write_jsonl(tmp / f"{name}.jsonl", units)
    job_id, _ = c.create_job(
        "--name", name, "--jsonl", str(source), "--worker", worker, "--model", model,
        "--base-url", server_url, "--price-in", "0.15", "--price-out", "0.6",
        "--prompt", "Repeat the title: {{ row.title }}", "--concurrency", str(concurrency), *extra, cwd=tmp)
    env = {**os.environ, "OPENAI_API_KEY": "sk-dummy-bench", "ANTHROPIC_API_KEY": "sk-dummy-bench"}
    busy0 = machine_busy_s()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "agentic_batch", "start", str(job_id), "--skip-test", "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp, check=False)
    returned = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"abp start failed: {proc.stdout}\n{proc.stderr}")
    pid = int(json.loads(proc.stdout)["executor"]["pid"])
    spy = start_py_spy(pid, py_spy) if py_spy else None
    watch = CpuWatch(pid)
    status, _, finished = wait_job(job_id, timeout=timeout, watch=watch, pid=pid)
    wait_executor_gone(pid)
    busy = machine_busy_s() - busy0
    if spy is not None:
        stop_py_spy(spy)
    first_start, last_finish, first_finish = c.query_one(
        "SELECT MIN(started_at), MAX(finished_at), MIN(finished_at) FROM units WHERE job_id = ?", job_id)
    attempts, = c.query_one("SELECT COALESCE(SUM(attempt), 0) FROM units WHERE job_id = ?", job_id)
    return {"job_id": job_id, "status": status, "t0": t0, "start_returned": returned, "finished": finished,
            "first_start": first_start, "first_finish": first_finish, "last_finish": last_finish,
            "counts": unit_counts(job_id), "attempts": attempts, "executor_cpu_s": watch.self_s, "pid": pid,
            "machine_busy_s": busy, "machine_s": (time.time() - t0) * (os.cpu_count() or 1)}


def spy_breakdown(raw: Path, sdk_paths: tuple[str, ...], top: int = 25) -> None:
    """Where the executor's busy samples go: in the model SDK's code (any frame under one of
    `sdk_paths`, e.g. ('openai/', 'httpx/', 'httpcore', 'anyio/'); py-spy's non-blocking stacks are
    sometimes cut short, so this looks at the frames' files rather than at one call), on the store
    thread, in the rest of the event loop (engine + worker + asyncio), or with no Python frame at all
    (native code); then the hottest agentic_batch functions and leaf frames of that rest."""
    from collections import Counter

    stacks = read_stacks(raw)
    total = sum(n for _, n in stacks)
    if not total:
        print(f"{raw}: no samples")
        return
    parts: Counter[str] = Counter()
    rest: Counter[str] = Counter()
    store_fns: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            parts["no Python frame (native code, e.g. sqlite3 or socket calls, GIL hand-offs)"] += n
        elif any("concurrent/futures/thread.py" in f or "sqlalchemy/" in f for f in frames):
            parts["store thread (SQLAlchemy + sqlite3)"] += n
            own = [f.split(" (")[0] for f in frames if "agentic_batch/" in f]
            store_fns[own[-1] if own else "(other)"] += n
        elif any(_frame_file(f).split("site-packages/")[-1].startswith(sdk_paths) for f in frames):
            parts["model SDK (client, HTTP stack, request/response models)"] += n
        else:
            parts["rest of the event loop (engine, worker, asyncio)"] += n
            for name in {_frame_name(f) for f in frames if "agentic_batch/" in f and "cli/" not in f
                         and "__main__" not in f and not f.startswith("Executor.run ")}:
                rest[name] += n
            leaves[_frame_name(frames[-1])] += n
    print(f"{raw}: {total} busy samples")
    for name, n in parts.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("  store thread, by the agentic_batch function that asked:")
    for name, n in store_fns.most_common(6):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print(f"  rest of the event loop, agentic_batch functions, cumulative (top {top}):")
    for name, n in rest.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print(f"  rest of the event loop, hottest leaf frames (top {top // 2}):")
    for name, n in leaves.most_common(top // 2):
        print(f"    {100 * n / total:5.1f}%  {name}")


def _frame_file(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `path/to/file.py:12` (py-spy shortens site-packages paths)."""
    return frame.rpartition(" (")[2].rstrip(")")


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"
