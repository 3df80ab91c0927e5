"""Test first: run the job's first unit, before any money is spent on the rest.

The unit goes through the same runner as in the executor (same prompt rendering, timeout, process
cleanup, retry decision) and its conversation is streamed to the store as it runs.

A test run is owned like an executor's unit: its owner is registered in the executors table (state
`testing`, with host, pid and pid start time), holds a lease on the unit and heartbeats. So when the
process running it dies (the MCP client shut its server down, Claude Code was killed), the next
`start` sees a dead pid (or, from another host, an expired lease) and runs the test again instead of
reporting a test that never finished. SIGTERM/SIGINT during the test give the unit back at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.engine.launch import spawn_detached
from agentic_batch.engine.procs import hostname, pid_start_token, process_alive
from agentic_batch.errors import AbpError, IllegalState
from agentic_batch.store import JobRecord, Store
from agentic_batch.states import JobStatus, UnitStatus

#: The executors-table states of a test run's owner (executors proper are running/stopping/stopped/dead):
#: testing while it runs, then tested (it ended, or was interrupted) or test-lost (it died; reclaimed).
TESTING_STATE, TESTED_STATE, LOST_STATE = "testing", "tested", "test-lost"


class TestInterrupted(BaseException):
    """The test run got SIGTERM or SIGINT; its unit is PENDING again. A BaseException, like
    KeyboardInterrupt, so that nothing on the way out mistakes it for the unit's own error."""

    __test__ = False  # not a pytest test class

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@dataclass(frozen=True)
class TestOwner:
    """Who runs a job's test unit right now: enough to say so and to know whether it still lives."""

    __test__ = False

    id: str
    host: str
    pid: int
    started_at: float
    alive: bool


def register_test_owner(store: Store, job_id: int) -> str:
    """Enter this process in the executors table as the job's tester, before the job turns TESTING:
    whoever sees a TESTING job can then tell a test that is starting from one that died."""
    owner = f"test-{hostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store.executors.register_executor(owner, job_id, hostname(), os.getpid(), pid_start_token(os.getpid()))
    store.executors.set_executor_state(owner, TESTING_STATE)
    return owner


def run_test_unit(store: Store, settings: Settings, job: JobRecord, owner: str) -> int:
    """Run the first pending unit as `owner` (see register_test_owner); the job must already be
    TESTING. Returns the unit id.

    Raises TestInterrupted (after giving the unit back) when SIGTERM or SIGINT arrives meanwhile.
    """
    # The engine and the workers are imported here, not with the module: every Orchestrator imports this
    # module (TestFlowMixin), and `abp list` / `abp status` must not pay for the engine.
    from agentic_batch.engine.executor import close_worker
    from agentic_batch.engine.reaper import Reaper
    from agentic_batch.engine.recorder import Recorder
    from agentic_batch.engine.runner import UnitRunner
    from agentic_batch.workers import get_worker_kind

    try:
        worker = get_worker_kind(job.worker).build(job.worker_options)  # before the claim: a bad worker
        unit = store.units.first_unit(job.id)                                 # leaves the unit untouched
        if unit is None:
            raise IllegalState(f"job {job.id} has no pending unit to test")
        claimed = store.units.claim_unit(owner, unit.id, settings.lease_seconds)
        if claimed is None:
            raise IllegalState(f"unit {unit.number} of job {job.id} is no longer pending")
        store.jobs.update_job(job.id, test_unit_id=unit.id)
    except BaseException:
        store.executors.set_executor_state(owner, TESTED_STATE)
        raise
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abp-test-store")
    interrupted: list[str] = []

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kwargs))

    async def heartbeat() -> None:
        """Like an executor's: keep the lease and tell other processes (other hosts) that we live."""
        while True:
            await asyncio.sleep(max(0.2, settings.lease_seconds / 3))
            try:
                await db(store.units.renew_leases, owner, settings.lease_seconds)
                await db(store.executors.beat_executor, owner)
            except Exception:  # a busy store must not end the test; the lease is long
                pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread:  # a server calls this from a worker thread: its own shutdown handles signals
            def on_signal(name: str) -> None:
                interrupted.append(name)
                task.cancel()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig.name)
        recorder = Recorder(store, db, owner=owner)
        reaper = Reaper()
        reaper.start()
        background = [asyncio.create_task(recorder.run()), asyncio.create_task(heartbeat())]
        try:
            recorder.log(job.id, "info", f"test run of unit {unit.number} ({unit.key}) by pid {os.getpid()} "
                                         f"on {hostname()}", unit_id=unit.id)
            runner = UnitRunner(job, worker, recorder, settings, reaper=reaper, executor_id=owner)
            try:
                await runner.run_unit(claimed)
            finally:
                await asyncio.to_thread(runner.release_worktrees)  # the test's worktree: the run ends here
        except asyncio.CancelledError:
            if not interrupted:
                raise
            recorder.log(job.id, "warning", f"test run of unit {unit.number} interrupted by {interrupted[0]}; the "
                                            f"unit is PENDING again and the next start tests it anew",
                         unit_id=unit.id)
        finally:
            await close_worker(worker)
            for bg in background:
                bg.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await recorder.flush()
            reaper.close()
            if on_main_thread:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    finally:
        store.units.release_units(owner)  # interrupted: the unit goes back to PENDING
        store.executors.set_executor_state(owner, TESTED_STATE)
        pool.shutdown(wait=True)
    if interrupted:
        raise TestInterrupted(interrupted[0])
    return unit.id


def find_test_owner(store: Store, settings: Settings, job: JobRecord) -> TestOwner | None:
    """Who runs the job's test, if a test run is under way (or was, and died), and whether it lives.

    Under way: the test unit is RUNNING (its lease owner), or no result is there yet and a tester is
    registered (it is starting). Alive means: its pid runs (same host; pid and start time name one
    process) or its heartbeat is fresh (another host), and its lease on the unit, if it has one, has
    not expired (a stopped process loses it).
    """
    if job.status != JobStatus.TESTING:
        return None
    unit = store.units.get_unit(job.test_unit_id) if job.test_unit_id is not None else None
    records = store.executors.list_executors(job.id)
    now = time.time()
    if unit is not None and unit.status == UnitStatus.RUNNING and unit.lease_owner:
        record = next((r for r in records if r.id == unit.lease_owner), None)
        leased = bool(unit.lease_expires_at and unit.lease_expires_at > now)
        if record is None:  # a test run from before owners were registered: the lease alone decides
            return TestOwner(unit.lease_owner, "?", 0, unit.started_at or now, alive=leased)
        started = unit.started_at or record.started_at
    else:
        if unit is not None and (unit.status != UnitStatus.PENDING or unit.error):
            return None  # a result (or a retryable error) waits for the user
        record = next((r for r in records if r.state == TESTING_STATE), None)  # newest first
        if record is None:
            return None
        leased, started = True, record.started_at
    alive = record.state == TESTING_STATE and leased
    if alive:
        if record.host == hostname():
            alive = process_alive(record.pid, record.pid_start)
        else:
            alive = now - record.heartbeat_at < settings.lease_seconds
    return TestOwner(record.id, record.host, record.pid, started, alive)


def reclaim_lost_test(store: Store, settings: Settings, job: JobRecord) -> bool:
    """A TESTING job whose test run died (dead pid, expired lease): unit back to PENDING, job back to
    CREATED, with a log line saying why. True if it did so."""
    owner = find_test_owner(store, settings, job)
    if owner is None or owner.alive:
        return False
    with contextlib.suppress(Exception):
        store.executors.set_executor_state(owner.id, LOST_STATE)
    store.units.release_units(owner.id)
    if not store.jobs.update_job(job.id, expect=[JobStatus.TESTING], status=JobStatus.CREATED):
        return False
    store.logs.append_logs([{"job_id": job.id, "unit_id": job.test_unit_id, "level": "warning",
                             "message": f"the test run of job {job.id} (pid {owner.pid} on {owner.host}) ended without "
                                   "a result; its unit is PENDING again"}])
    return True


class TestRunning(IllegalState):
    """The job's test unit is being run right now by a live process (this or another one)."""

    __test__ = False

    def __init__(self, job_id: int, unit: int | None, owner: TestOwner) -> None:
        elapsed = max(0.0, time.time() - owner.started_at)
        super().__init__(f"job {job_id} is being tested right now (unit {unit}, pid {owner.pid} on {owner.host}, "
                         f"{elapsed:.0f}s so far)",
                         hint=f"wait for it; `abp start {job_id}` shows the result once it is done")
        self.owner = owner
        self.unit = unit


def detached_test_log(settings: Settings, job_id: int) -> Path:
    path = settings.job_dir(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path / "test.log"


def launch_detached_test(store: Store, settings: Settings, job: JobRecord, wait_seconds: float = 20.0) -> int:
    """Run the job's test in `python -m agentic_batch.service.test_process JOB`, in a session of its own
    (so neither the caller's exit nor a kill of its process group reaches it). Returns once the test
    has taken the job (TESTING) or already finished; raises with the log's tail if it could not start."""
    log_path = detached_test_log(settings, job.id)
    argv = [sys.executable, "-m", "agentic_batch.service.test_process", str(job.id)]
    cwd = job.workdir if job.workdir and os.path.isdir(job.workdir) else None
    proc = spawn_detached(argv, log_path, cwd)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        current = store.jobs.get_job(job.id)
        if current is None or current.status != JobStatus.CREATED:
            return proc.pid  # ours took it, or another caller's test did: either way it is under way
        if proc.poll() is not None:
            detail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise AbpError(f"the test run of job {job.id} exited at once (code {proc.returncode})"
                           + (f": {detail}" if detail else ""), hint=f"see {log_path}")
        time.sleep(0.05)
    raise AbpError(f"the test run of job {job.id} did not start within {wait_seconds:g}s", hint=f"see {log_path}")
