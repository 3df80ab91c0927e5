"""The executor: a process that works through one job's units with a bounded asyncio pool.

Lifecycle: take the host lock (one executor per job per host), register in the store, start the
watchdog, then loop: claim as many units as there are free slots, run them, write results in
batches. Heartbeats renew every lease at a third of its length. The job's `control` column and
SIGTERM/SIGINT ask it to stop (finish in-flight units within a grace period, release the rest,
job -> PAUSED); a second signal or a cancel stops at once. When no unit is left it sets the job's
final status, after the optional reduce step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import time
import uuid
from typing import Any

from agentic_batch.config import Settings, load_settings
from agentic_batch.engine.hostlock import HostLock, spawn_guard
from agentic_batch.engine.limits import AdaptiveLimit, Budget, RateGate, is_rate_limit
from agentic_batch.engine.procs import hostname, pid_start_token
from agentic_batch.engine.reaper import Reaper
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.errors import AbpError
from agentic_batch.store import JobRecord, Store, UnitResult, open_store
from agentic_batch.workers import get_worker_kind

log = logging.getLogger(__name__)


def _configure_logging() -> None:
    """The executor's stdout is its log file: timestamps, warnings and up. The Claude SDK logs every
    failed unit as a fatal reader error; the unit's own error already says it, so that logger is muted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("claude_agent_sdk._internal.query").setLevel(logging.CRITICAL)
    for noisy in ("httpx", "httpcore", "mcp", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def close_worker(worker: object) -> None:
    """Workers holding clients (HTTP pools, SDK sessions) may offer `aclose()`; call it once at the end."""
    aclose = getattr(worker, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as exc:  # closing must never turn a finished job into a crash
            log.warning("closing the worker failed: %s", exc)

#: Modes: run; stop = finish in-flight units within the grace period, then PAUSED; abort = stop now
#: (a second signal), PAUSED; cancel = the job was cancelled, kill everything now.
RUN, STOP, ABORT, CANCEL = "run", "stop", "abort", "cancel"
_SEVERITY = {RUN: 0, STOP: 1, ABORT: 2, CANCEL: 3}


class Executor:
    def __init__(self, job_id: int, store: Store | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = store or open_store(self.settings.db_url)
        self.job_id = job_id
        self.id = f"{hostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.mode = RUN
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abp-store")
        self._wake: asyncio.Event | None = None
        self._signals = 0
        self.pause_reason = "stopped"
        self.hold_until: float | None = None

    async def db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a store call on the single store thread (SQLite wants one writer; the loop stays free)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    # -- entry point ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the job is done, stopped or cancelled. Returns a process exit code."""
        _configure_logging()
        lock = HostLock(self.settings.run_dir, self.job_id)
        if not lock.acquire():
            print(f"abp: an executor for job {self.job_id} already runs on this host; nothing to do", flush=True)
            return 0
        try:
            job = self.store.get_job(self.job_id)
            if job is None:
                print(f"abp: no job {self.job_id}", flush=True)
                return 1
            if job.status != "RUNNING":
                print(f"abp: job {self.job_id} is {job.status}, not RUNNING; executor exits", flush=True)
                return 1
            self.store.register_executor(self.id, self.job_id, hostname(), os.getpid(), pid_start_token(os.getpid()))
            try:
                while True:
                    code = asyncio.run(self._main(job))
                    again = self._still_wanted(lock)
                    if again is None:
                        return code
                    job, self.mode, self._signals, self.pause_reason = again, RUN, 0, "stopped"
            finally:
                self.store.set_executor_state(self.id, "stopped")
        finally:
            lock.release()
            self._pool.shutdown(wait=False)

    def _still_wanted(self, lock: HostLock) -> JobRecord | None:
        """At the end: is the job RUNNING again (a retry or resume raced our exit)? Then keep working.

        Checked under the same guard `launch_executor` holds while it looks for a live executor, so a
        caller either sees us and relies on us, or finds the lock free and starts a new executor.
        """
        with spawn_guard(self.settings.run_dir, self.job_id):
            job = self.store.get_job(self.job_id)
            if self._signals == 0 and job is not None and job.status == "RUNNING" and job.control is None:
                return job
            lock.release()
            return None

    # -- signals and control --------------------------------------------------------------------

    def _on_signal(self, signame: str) -> None:
        self._signals += 1
        self.request(STOP if self._signals == 1 else ABORT, f"{signame} received")

    def request(self, mode: str, why: str) -> None:
        """Ask the pool loop to stop, abort or cancel; a more severe request wins over a milder one."""
        if _SEVERITY[mode] > _SEVERITY[self.mode]:
            log.info("executor %s: %s -> %s", self.id, why, mode)
            self.mode = mode
        if self._wake is not None:
            self._wake.set()

    async def _watch_control(self) -> None:
        """Poll the job row once a second: stop/cancel requests from any host, quota holds."""
        while True:
            await asyncio.sleep(1.0)
            job = await self.db(self.store.get_job, self.job_id)
            if job is None or job.status == "CANCELLED" or job.control == CANCEL:
                self.request(CANCEL, "job cancelled")
            elif job.control == STOP or job.status != "RUNNING":
                self.request(STOP, "stop requested")
            self.hold_until = job.hold_until if job else None

    async def _heartbeat(self) -> None:
        interval = max(0.2, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.db(self.store.renew_leases, self.id, self.settings.lease_seconds)
                await self.db(self.store.beat_executor, self.id)
            except Exception as exc:  # a busy store must not kill the executor; leases are long
                log.warning("heartbeat failed: %s", exc)

    # -- main loop ------------------------------------------------------------------------------

    async def _main(self, job: JobRecord) -> int:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.hold_until: float | None = job.hold_until
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self._on_signal, name)
        recorder = Recorder(self.store, self.db, owner=self.id)
        reaper = Reaper()
        reaper.start()
        background = [asyncio.create_task(t) for t in (recorder.run(), self._heartbeat(), self._watch_control())]
        recorder.log(self.job_id, "info", f"executor started (pid {os.getpid()}, host {hostname()})",
                     executor_id=self.id)
        try:
            try:
                worker = get_worker_kind(job.worker).build(job.worker_options)
            except AbpError as exc:
                recorder.log(self.job_id, "error", f"cannot build the {job.worker} worker: {exc.one_line()}",
                             executor_id=self.id)
                await recorder.flush()
                await self.db(self.store.update_job, self.job_id, expect=["RUNNING"], status="FAILED",
                              error=exc.one_line(), finished_at=time.time())
                return 1
            self.gate = RateGate(job.rpm, job.tpm)
            runner = UnitRunner(job, worker, recorder, self.settings, reaper=reaper, executor_id=self.id,
                                gate=self.gate)
            try:
                await self._pool_loop(job, runner, recorder)
                await recorder.flush()
                await self._finish(job, runner, recorder)
                await recorder.flush()
            finally:
                await close_worker(worker)
            return 0
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await recorder.flush()
            reaper.close()

    async def _pool_loop(self, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> None:
        assert self._wake is not None
        limit = AdaptiveLimit(job.concurrency)
        totals = await self.db(self.store.unit_totals, self.job_id)
        counts = await self.db(self.store.count_units, self.job_id)
        budget = Budget(job.budget_usd, totals["cost_usd"], counts["COMPLETED"] + counts["FAILED"])
        inflight: dict[asyncio.Task[Any], int] = {}
        while self.mode == RUN:
            held = self.hold_until is not None and self.hold_until > time.time()
            free = budget.how_many(len(inflight), limit.value() - len(inflight))
            if free > 0 and not held:
                claimed = await self.db(self.store.claim_units, self.id, [self.job_id], free,
                                        self.settings.lease_seconds)
                for unit in claimed:
                    inflight[asyncio.create_task(runner.run_unit(unit))] = unit.id
            if not inflight:
                if budget.how_many(0, 1) == 0:
                    recorder.log(self.job_id, "warning", f"budget reached: ${budget.spent:.4f} of "
                                 f"${budget.limit:.4f} spent; job paused", executor_id=self.id)
                    self.pause_reason = "budget"
                    self.request(STOP, "budget reached")
                    break
                if await self._nothing_left(recorder):
                    return
                await self._idle_wait(held)
                continue
            self._wake.clear()
            waiter = asyncio.create_task(self._wake.wait())
            done, _ = await asyncio.wait({*inflight, waiter}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in done:
                if task is waiter:
                    continue
                inflight.pop(task, None)
                await self._account(task.result(), budget, limit, recorder)
        await self._drain(inflight, recorder)

    async def _account(self, result: UnitResult, budget: Budget, limit: AdaptiveLimit, recorder: Recorder) -> None:
        """Feed an attempt's result to the budget, the adaptive limit and the quota hold."""
        budget.record(result.cost_usd, result.status in ("COMPLETED", "FAILED"))
        if result.error and is_rate_limit(result.error) and limit.rate_limited():
            recorder.log(self.job_id, "warning", f"rate limited: in-flight limit lowered to {limit.current}",
                         executor_id=self.id)
        if result.error_class == "quota" and result.not_before:
            until = max(result.not_before, self.hold_until or 0.0)
            self.hold_until = until
            await self.db(self.store.update_job, self.job_id, hold_until=until)
            recorder.log(self.job_id, "warning", "quota reached: no new units until "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))} ({result.error})",
                         executor_id=self.id)

    async def _nothing_left(self, recorder: Recorder) -> bool:
        await recorder.flush()
        counts = await self.db(self.store.count_units, self.job_id)
        return counts["PENDING"] == 0 and counts["RUNNING"] == 0

    async def _idle_wait(self, held: bool) -> None:
        """Nothing to run now: units are backing off, held by a quota, or leased by another executor."""
        assert self._wake is not None
        delay = 1.0
        if not held:
            nb = await self.db(self.store.next_not_before, self.job_id)
            if nb is not None:
                delay = min(delay, max(0.01, nb - time.time()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _drain(self, inflight: dict[asyncio.Task[Any], int], recorder: Recorder) -> None:
        """Stopping: let in-flight units finish within the grace period, then cancel and release them."""
        if inflight and self.mode == STOP:
            recorder.log(self.job_id, "info", f"stopping: waiting up to {self.settings.stop_grace_seconds:g}s "
                         f"for {len(inflight)} running unit(s)", executor_id=self.id)
            deadline = time.monotonic() + self.settings.stop_grace_seconds
            while inflight and self.mode == STOP and time.monotonic() < deadline:
                assert self._wake is not None
                self._wake.clear()
                waiter = asyncio.create_task(self._wake.wait())
                done, _ = await asyncio.wait({*inflight, waiter}, timeout=deadline - time.monotonic(),
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                for task in done:
                    inflight.pop(task, None)
        if inflight:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            await recorder.flush()
            released = await self.db(self.store.release_units, self.id, list(inflight.values()))
            recorder.log(self.job_id, "info", f"released {released} unfinished unit(s) back to PENDING",
                         executor_id=self.id)

    # -- the end --------------------------------------------------------------------------------

    async def _finish(self, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> None:
        now = time.time()
        if self.mode == CANCEL:
            await self.db(self.store.update_job, self.job_id, expect=["RUNNING", "PAUSED"], status="CANCELLED",
                          finished_at=now)
            await self.db(self.store.set_units_status, self.job_id, ["PENDING", "RUNNING"], "CANCELLED")
            await self.db(self.store.update_job, self.job_id, control=None)
            recorder.log(self.job_id, "info", "executor stopped: job cancelled", executor_id=self.id)
            return
        if self.mode in (STOP, ABORT):
            changed = await self.db(self.store.update_job, self.job_id, expect=["RUNNING"], status="PAUSED",
                                    control=None, pause_reason=self.pause_reason)
            if not changed:  # someone already paused it (or it was cancelled): just clear the request
                await self.db(self.store.update_job, self.job_id, control=None)
            recorder.log(self.job_id, "info", "executor stopped: job paused", executor_id=self.id)
            return
        counts = await self.db(self.store.count_units, self.job_id)
        if counts["FAILED"]:
            await self.db(self.store.update_job, self.job_id, expect=["RUNNING"], status="FAILED",
                          finished_at=now, error=f"{counts['FAILED']} unit(s) failed after retries")
            recorder.log(self.job_id, "error", f"job failed: {counts['FAILED']} unit(s) failed", executor_id=self.id)
            return
        if job.reduce_prompt:
            from agentic_batch.engine.reduce import run_reduce

            ok = await run_reduce(self, job, runner, recorder)
            if not ok:
                return
        await self.db(self.store.update_job, self.job_id, expect=["RUNNING"], status="COMPLETED",
                      finished_at=time.time(), error=None)
        recorder.log(self.job_id, "info", f"job completed: {counts['COMPLETED']} unit(s)", executor_id=self.id)
