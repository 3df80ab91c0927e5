"""A warm executor: started by the CLI the moment it sees a command that will launch one, so the
executor's start-up overlaps the CLI's own instead of following it.

Why: both are Python processes that import most of the package (SQLAlchemy, pydantic, ...; about
0.3 s of CPU each), and the executor then imports the worker's SDK (claude-agent-sdk: about 0.5 s).
Done one after the other that is ~1.2 s before the first agent starts, against ~0.1 s for GNU
`parallel`; on a 40-unit Claude job that alone is ~8% of the wall time (docs/benchmarks.md). Done
side by side on two cores, the CLI's part hides under the executor's.

Protocol (one line on the warm process's stdin):

* The CLI (`prespawn`, called before it imports anything heavy) starts
  `python -m agentic_batch executor --warm [--job ID] [--worker KIND]` in a new session, with stdin
  a pipe and output discarded. The process imports the engine and runs the worker's `prepare()`
  (from the job's worker, or the `--worker` of `abp run`), touching nothing in the store.
* `launch_executor` (service layer, after every state check passed) calls `take(...)`: it writes one
  JSON line `{"job_id", "join", "cwd", "log"}` and closes the pipe. The process moves its output to
  the job's executor log, changes to the job's directory and runs as an ordinary executor (lock,
  registration, everything else exactly as a freshly spawned one).
* Anything else (the command failed, was refused, or did not launch after all): the CLI exits or
  calls `discard()`, the pipe reaches EOF and the warm process exits at once, from a thread that
  watches stdin even while the imports run. (No idle timeout: one could race a late `take`, and
  the pipe's EOF already ends it when the CLI goes, however the CLI goes.)

`take` returns None when there is no live warm process; the caller then spawns one the usual way,
so a warm process that died, or was never started, costs nothing but the time it would have saved.
Set ABP_WARM_EXECUTOR=0 to never start one.

This module is imported by the CLI before anything heavy: standard library (and config.py, which
is standard library only) at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from agentic_batch.config import env_flag
from agentic_batch.refs import parse_id

WARM_FLAG = "--warm"
#: Commands that may launch an executor, with the flags that say they will (None: always may).
_LAUNCHING: dict[str, tuple[str, ...] | None] = {
    "start": ("--skip-test", "--approve"),
    "run": None,
    "resume": None,
    "retry": None,
}

_warm: subprocess.Popen[bytes] | None = None


def _enabled() -> bool:
    return os.name == "posix" and env_flag("ABP_WARM_EXECUTOR", default=True)


def _flag_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def hints(args: list[str]) -> list[str] | None:
    """The warm process's arguments for this command line, or None when it will not launch an executor."""
    if not args or args[0] not in _LAUNCHING or "--help" in args:
        return None
    needed = _LAUNCHING[args[0]]
    if needed is not None and not env_flag("ABP_SKIP_TEST") and not any(flag in args for flag in needed):
        return None
    if args[0] == "start" and "--reject" in args:
        return None
    extra: list[str] = []
    if len(args) > 1 and parse_id(args[1]) is not None:
        extra += ["--job", args[1]]
    worker = _flag_value(args, "--worker")
    if args[0] == "run":
        extra += ["--worker", worker or "command"]
    return extra


def prespawn(args: list[str]) -> None:
    """Start a warm executor if this command line will probably launch one (best effort, never raises)."""
    global _warm
    extra = hints(args)
    if extra is None or not _enabled() or _warm is not None:
        return
    try:
        proc = subprocess.Popen([sys.executable, "-m", "agentic_batch", "executor", WARM_FLAG, *extra],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True, env=os.environ.copy())
    except OSError:
        return
    threading.Thread(target=proc.wait, name=f"abp-reap-{proc.pid}", daemon=True).start()
    _warm = proc


def take(job_id: int, join: bool, cwd: str | None, log: Path) -> subprocess.Popen[bytes] | None:
    """Hand the warm process this job; return it, or None if there is none alive (spawn one instead)."""
    global _warm
    proc, _warm = _warm, None
    if proc is None or proc.stdin is None:
        return None
    if proc.poll() is not None:
        return None
    line = json.dumps({"job_id": job_id, "join": join, "cwd": cwd, "log": str(log)}) + "\n"
    try:
        proc.stdin.write(line.encode())
        proc.stdin.close()
    except OSError:  # it died meanwhile: spawn a fresh one
        return None
    return proc


def discard() -> None:
    """Let an unused warm process go (EOF on its stdin)."""
    global _warm
    proc, _warm = _warm, None
    if proc is not None and proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


# -- the warm process's side ---------------------------------------------------------------------

def _worker_hint(job_ref: str | None, worker_kind: str | None) -> tuple[str | None, dict[str, Any]]:
    """The worker kind and options the job will run with: from the job (read-only), else the hint."""
    if job_ref is None:
        return worker_kind, {}
    from agentic_batch.config import load_settings
    from agentic_batch.store import Store

    store = Store(load_settings().db_url)  # no migrate(): read one row, change nothing
    try:
        job = store.jobs.get_job(int(job_ref))
    finally:
        store.close()
    return (job.worker, job.worker_options) if job is not None else (worker_kind, {})


def _prepare_worker(kind: str | None, options: dict[str, Any]) -> None:
    """The worker's `prepare()` (its SDK import). Runs in a thread: a job handed over meanwhile starts
    at once, and its first unit's own `prepare()` waits on the same import lock instead of repeating it."""
    if kind is None:
        return
    from agentic_batch.workers import get_worker_kind

    with contextlib.suppress(Exception):  # only a lost head start: the executor reports real errors
        prepare = getattr(get_worker_kind(kind).build(options), "prepare", None)
        if prepare is not None:
            prepare()


def serve(args: list[str]) -> int:
    """`executor --warm [--job ID] [--worker KIND]`: get ready, then wait for a job (see the module doc)."""
    order: dict[str, Any] = {}
    arrived = threading.Event()

    def listen() -> None:
        line = sys.stdin.buffer.readline()
        try:
            order.update(json.loads(line))
        except ValueError:
            os._exit(0)  # EOF or garbage: the CLI did not launch; nothing was touched, nothing to clean
        arrived.set()

    threading.Thread(target=listen, name="abp-warm-stdin", daemon=True).start()
    import agentic_batch.engine.executor  # noqa: F401  (the imports are the point)

    kind: str | None = None
    options: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # a hint only
        kind, options = _worker_hint(_flag_value(args, "--job"), _flag_value(args, "--worker"))
    threading.Thread(target=_prepare_worker, args=(kind, options), name="abp-warm-prepare", daemon=True).start()
    arrived.wait()
    log_fd = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    for src, dst in ((null_fd, 0), (log_fd, 1), (log_fd, 2)):
        os.dup2(src, dst)
    os.close(log_fd)
    os.close(null_fd)
    if order.get("cwd") and os.path.isdir(order["cwd"]):
        os.chdir(order["cwd"])
    from agentic_batch.engine.executor import Executor
    from agentic_batch.errors import AbpError

    try:
        return Executor(int(order["job_id"]), join=bool(order.get("join"))).run()
    except AbpError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
