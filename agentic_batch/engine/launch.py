"""Starting the detached executor: `python -m agentic_batch executor JOB` in a new session.

The caller (CLI, web server, MCP server) may exit the moment this returns; the executor keeps going,
survives the terminal closing, and talks to everyone else only through the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from agentic_batch.config import Settings
from agentic_batch.engine import warm
from agentic_batch.engine.hostlock import live_slots, spawn_guard
from agentic_batch.engine.procs import process_alive
from agentic_batch.errors import AbpError


def executor_log_path(settings: Settings, job_id: int) -> Path:
    path = settings.job_dir(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path / "executor.log"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def spawn_detached(argv: list[str], log_path: Path, cwd: str | None,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own (neither the caller's exit nor a signal to its process group
    reaches it), output appended to `log_path`, with `env` (default: this process's environment). A
    thread reaps it if this process lives long (a server); otherwise init adopts it."""
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=cwd,
                                env=os.environ.copy() if env is None else env)
    threading.Thread(target=proc.wait, name=f"abp-reap-{proc.pid}", daemon=True).start()
    return proc


def launch_executor(settings: Settings, job_id: int, workdir: str | None = None,
                    wait_seconds: float = 20.0, join: bool = False) -> tuple[int, bool]:
    """Start an executor for the job on this host.

    Without `join`: the job's primary executor, unless one already runs (returns (pid, False)).
    With `join`: one more executor in the next free slot (multi-executor jobs). Waits until the new
    executor holds its lock, so a caller arriving a moment later sees it.
    """
    with spawn_guard(settings.run_dir, job_id):
        before = live_slots(settings.run_dir, job_id)
        if not join:
            existing = before.get((job_id, 1))
            # a held slot naming a dead pid is no executor (a child of a killed one may still hold the
            # flock for a moment): start one; it waits for the slot, or exits saying why
            if existing is not None and (existing < 0 or process_alive(existing)):
                return existing, False
        log_path = executor_log_path(settings, job_id)
        cwd = workdir if workdir and os.path.isdir(workdir) else None
        proc = warm.take(job_id, join, cwd, log_path)  # the CLI's head start, if it made one
        if proc is None:
            proc = spawn_detached(_executor_argv(job_id, join), log_path, cwd)
        _wait_started(settings, job_id, [proc], log_path, wait_seconds)
        return proc.pid, True


def launch_joiners(settings: Settings, job_id: int, count: int, workdir: str | None = None,
                   wait_seconds: float = 20.0) -> list[int]:
    """Start `count` more executors for the job on this host (`--join`), all at once, and wait until
    each holds its slot. Started one after the other, each waited for its own start-up (imports,
    registration: ~0.5 s idle, seconds on a loaded host) before the next was even spawned."""
    if count <= 0:
        return []
    with spawn_guard(settings.run_dir, job_id):
        log_path = executor_log_path(settings, job_id)
        cwd = workdir if workdir and os.path.isdir(workdir) else None
        procs = [spawn_detached(_executor_argv(job_id, True), log_path, cwd) for _ in range(count)]
        _wait_started(settings, job_id, procs, log_path, wait_seconds)
        return [proc.pid for proc in procs]


def _executor_argv(job_id: int, join: bool) -> list[str]:
    return [sys.executable, "-m", "agentic_batch", "executor", str(job_id)] + (["--join"] if join else [])


def _wait_started(settings: Settings, job_id: int, procs: list[subprocess.Popen[bytes]], log_path: Path,
                  wait_seconds: float) -> None:
    """Until every one of `procs` holds a slot of the job (or already did its work and left with 0)."""
    deadline = time.monotonic() + wait_seconds
    waiting = list(procs)
    while time.monotonic() < deadline:
        held = set(live_slots(settings.run_dir, job_id).values())
        for proc in list(waiting):
            if proc.pid in held or proc.poll() == 0:  # 0: it already did its work (a tiny job) and left
                waiting.remove(proc)
            elif proc.poll() is not None:
                detail = _tail(log_path)
                raise AbpError(f"the executor for job {job_id} exited at once (code {proc.returncode})"
                               + (f": {detail}" if detail else ""), hint=f"see {log_path}")
        if not waiting:
            return
        time.sleep(0.02)
    raise AbpError(f"the executor for job {job_id} did not start within {wait_seconds:g}s",
                   hint=f"see {log_path}")
