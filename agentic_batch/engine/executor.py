"""The executor: a process that works through one job's units with a bounded asyncio pool.

Lifecycle: take a host slot lock (slot 1 is the job's one primary executor on this host; `--join`
adds more in further slots), register in the store, start the watchdog, run the pool, then set the
job's final status (`finish`). Heartbeats renew every lease at a third of its length and give back
the units of executors that died. The job's `control` column (any host) and SIGTERM/SIGINT ask it to
stop: finish in-flight units within a grace period, release the rest, job -> PAUSED; a second
signal stops at once; a cancelled job stops at once. On PostgreSQL, LISTEN/NOTIFY wakes it instead
of tight polling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from agentic_batch.aio import run_bounded, wait_event
from agentic_batch.config import Settings, load_settings
from agentic_batch.engine.finish import finish, pause_for_store
from agentic_batch.engine.hostlock import HostLock, holder_pid, spawn_guard
from agentic_batch.engine.limits import RateGate
from agentic_batch.engine.outage import OutageGuard, StoreUnavailable
from agentic_batch.engine.pool import Pool
from agentic_batch.engine.procs import hostname, pid_start_token, process_alive
from agentic_batch.engine.reaper import Reaper
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.isolated import prune_dead_worktrees
from agentic_batch.engine.recovery import live_executors, reclaim_dead_executors
from agentic_batch.engine.run_state import Mode, RunState, StopReason
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.errors import AbpError
from agentic_batch.store import JobRecord, Store, open_store
from agentic_batch.store.faults import describe, fault_kind
from agentic_batch.workers import get_worker_kind
from agentic_batch.workers.base import Worker
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.batchapi.provider import BatchProvider

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: Exit code of an executor that gave up on an unavailable store (EX_TEMPFAIL: try again later).
EXIT_STORE_UNAVAILABLE = 75
#: Giving up on the store: how long to wait for cancelled units to stop before recording the pause.
UNIT_STOP_WAIT = 10.0
#: How long a starting executor keeps trying its slot while the slot file names no live executor
#: (someone probing it for an instant, a dying executor): HostLock.acquire. Under the launcher's 20 s.
SLOT_WAIT = 10.0


def _configure_logging() -> None:
    """The executor's stdout is its log file: timestamps, info and up. The Claude SDK logs every
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


class Executor:
    def __init__(self, job_id: int, store: Store | None = None, settings: Settings | None = None,
                 join: bool = False, worker: Worker | None = None, track_processes: bool = True) -> None:
        """`worker` replaces the one the job names, and `track_processes=False` starts no reaper (nor its
        watchdog process): both for running a job in-process with a worker that starts no process, as
        the engine's millisecond tests do (tests/unit/test_engine_*.py)."""
        self.settings = settings or load_settings()
        self.store = store or open_store(self.settings.db_url)
        self.job_id = job_id
        self.join = join
        self._worker = worker
        self._track_processes = track_processes
        self.id = f"{hostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        #: The run's mode, stop reason, quota hold and signals: see `run_state`.
        self.state = RunState(name=f"executor {self.id}")
        self.gate = RateGate(None, None)
        self._pool_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abp-store")
        self._listening = False
        self._pool: Pool | None = None
        self._recorder: Recorder | None = None
        self.outage = OutageGuard(self.settings.store_outage_seconds, on_back=self._store_back,
                                  on_give_up=self._store_gone, prepare=self._renew_leases,
                                  classify=lambda exc: fault_kind(exc, self.store.url))

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call on the single store thread (SQLite wants one writer; the loop stays free).

        Every store call of the executor comes through here, so this is where a store outage is waited
        out (`OutageGuard`): callers see either the answer or, past the window, `StoreUnavailable`.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await self.outage.call(lambda job: loop.run_in_executor(self._pool_thread, job), call)

    def _renew_leases(self) -> None:
        """First step of every retry during an outage: on recovery our leases are renewed before
        anything else (a claim) could take them back as expired."""
        self.store.units.renew_leases(self.id, self.settings.lease_seconds)

    def _store_back(self, kind: str, seconds: float) -> None:
        if self._recorder is not None:
            self._recorder.log(self.job_id, "warning", f"store {kind} for {seconds:.0f} s; resumed",
                               executor_id=self.id)

    def _store_gone(self, exc: StoreUnavailable) -> None:
        self.state.lose_store(exc)

    @property
    def idle_poll(self) -> float:
        """How long to sleep with nothing to do: long when notifications will wake us (PostgreSQL)."""
        return 5.0 if self._listening else 1.0

    # -- entry point ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the job is done, stopped or cancelled. Returns a process exit code."""
        _configure_logging()
        lock = HostLock(self.settings.run_dir, self.job_id)
        if not (lock.acquire_free_slot() if self.join else lock.acquire(wait=SLOT_WAIT)):
            holder = holder_pid(self.settings.run_dir, self.job_id)
            if not self.join and holder is not None and holder > 0 and not process_alive(holder):
                # held, but by no executor we can name (a child the killed one left?): leaving quietly
                # with code 0 would have the launcher trust a job nobody works on
                said = (f"the executor slot of job {self.job_id} is held, but not by a live executor "
                        f"(pid {holder} is gone); try `abp resume {self.job_id}` again")
                print(f"abp: {said}", flush=True)
                self.store.logs.append_logs([{"job_id": self.job_id, "level": "error", "message": said}])
                return 1
            print(f"abp: an executor for job {self.job_id} already runs on this host; nothing to do", flush=True)
            return 0
        try:
            job = self.store.jobs.get_job(self.job_id)
            if job is None:
                print(f"abp: no job {self.job_id}", flush=True)
                return 1
            if job.status != JobStatus.RUNNING:
                print(f"abp: job {self.job_id} is {job.status}, not RUNNING; executor exits", flush=True)
                # already paused or finished (e.g. a joiner arriving late): nothing to do, not an error
                return 1 if job.status in (JobStatus.CREATED, JobStatus.TESTING) else 0
            self.store.executors.register_executor(self.id, self.job_id, hostname(), os.getpid(),
                                                   pid_start_token(os.getpid()))
            lock.publish()
            left_cleanly = False
            try:
                while True:
                    code = run_bounded(self._main(job), self.settings.cancel_grace_seconds)
                    again = self._still_wanted(lock)
                    if again is None:
                        left_cleanly = not self.state.stranded
                        return code
                    job = again
                    self.state.reset()  # after a store pause too: a fresh outage window
                    self.outage.restart(self.settings.store_outage_seconds)
            finally:
                self._leave(left_cleanly)
        finally:
            lock.release()
            self._pool_thread.shutdown(wait=False)

    def _leave(self, cleanly: bool) -> None:
        """Say "stopped" only when the job's status already tells how we left it. An executor that could
        not record the pause (or crashed) stays "running" in the store: its pid is gone, so `abp status`
        shows it lost and `abp resume` takes back its units, instead of a "stopped" beside a job that
        still shows RUNNING with nobody working on it."""
        if not cleanly:
            log.error("executor %s leaves job %d without recording how it stopped: `abp status` will show it "
                      "lost; run `abp resume %d`", self.id, self.job_id, self.job_id)
            return
        try:
            self.store.executors.set_executor_state(self.id, "stopped")
        except Exception as exc:  # the store is gone: a resume finds this pid dead anyway
            log.error("could not mark executor %s stopped: %s", self.id, describe(exc))

    def _still_wanted(self, lock: HostLock) -> JobRecord | None:
        """At the end: is the job RUNNING again (a retry or resume raced our exit)? Then keep working.

        Checked under the guard `launch_executor` holds while it looks for a live primary executor, so
        a caller either sees us and relies on us, or finds the slot free and starts a new one. Joined
        executors just leave.
        """
        if lock.slot != 1 or self.state.left_job:
            return None
        with spawn_guard(self.settings.run_dir, self.job_id):
            job = self.store.jobs.get_job(self.job_id)
            # A stop that arrived as we ended is honoured by working again: the next pass sees it and
            # pauses the job (leaving now would strand it RUNNING with nobody to pause it).
            if job is not None and job.status == JobStatus.RUNNING and job.control in (None, Mode.STOP):
                return job
            lock.release()
            return None

    # -- signals and control --------------------------------------------------------------------

    def _notified(self, job_id: int, what: str) -> None:
        """From the LISTEN thread: something changed for some job; wake if it is ours. "units" (written
        or added: every executor's every flush says it) wakes the pool only; re-reading the job's control
        state for it cost a job read and a lease check per flush, per executor. A job with a budget still
        re-reads: the other executors' spending is what keeps the job-wide budget."""
        if job_id == self.job_id:
            if what != "units" or self._budgeted():
                self._loop.call_soon_threadsafe(self._control_now.set)
            self._loop.call_soon_threadsafe(self.state.wake.set)

    def _budgeted(self) -> bool:
        return self._pool is not None and self._pool.budget.limit is not None

    async def _watch_control(self) -> None:
        """Read the job row: stop/cancel requests from any host, quota holds, the job-wide budget and the
        executor count that splits rate limits. Every second, or on a notification (PostgreSQL)."""
        beats = 0
        while True:
            await wait_event(self._control_now, self.idle_poll if self._listening else 1.0)
            self._control_now.clear()
            try:
                beats = await self._read_control(beats)
            except StoreUnavailable:
                return  # the executor is giving up; see _main
            except Exception as exc:  # never stop reading stop/cancel requests over one odd failure
                log.warning("reading the job's control state failed: %s", exc)
                await asyncio.sleep(1.0)

    async def _read_control(self, beats: int) -> int:
        """One pass of `_watch_control`; returns the updated beat count."""
        job = await self.db(self.store.jobs.get_job, self.job_id)
        if job is None or job.status == JobStatus.CANCELLED or job.control == Mode.CANCEL:
            self.state.request(Mode.CANCEL, StopReason.CANCELLED, "job cancelled")
        elif job.control == Mode.STOP or job.status != JobStatus.RUNNING:
            self.state.request(Mode.STOP, StopReason.REQUESTED, "stop requested")
        self.state.hold_until = job.hold_until if job else None
        if self._pool is not None:
            await self._pool.refresh_budget()
            await self._pool.stop_lost_units()
        beats += 1
        if beats % 5 == 1 and job is not None:  # limits are job-wide: each executor takes its share
            live = max(1, len(await self.db(live_executors, self.store, self.settings, self.job_id)))
            if job.rpm or job.tpm:
                self.gate.set_share(live)
            if self._pool is not None:
                self._pool.share = live
        return beats

    async def _heartbeat(self) -> None:
        interval = max(0.2, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.db(self.store.units.renew_leases, self.id, self.settings.lease_seconds)
                await self.db(self.store.executors.beat_executor, self.id)
                if await self.db(reclaim_dead_executors, self.store, self.settings, self.job_id, self.id):
                    self.state.wake.set()
            except StoreUnavailable:
                return  # the executor is giving up; see _main
            except Exception as exc:  # a busy store must not kill the executor; leases are long
                log.warning("heartbeat failed: %s", exc)

    # -- main loop ------------------------------------------------------------------------------

    async def _main(self, job: JobRecord) -> int:
        self._loop = asyncio.get_running_loop()
        self.state.new_wake()
        self._control_now = asyncio.Event()
        self.state.hold_until = job.hold_until
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            self._loop.add_signal_handler(sig, self.state.signal, name)
        listener = self.store.changes.listen(self._notified)
        self._listening = listener is not None
        recorder = self._recorder = Recorder(self.store, self.db, owner=self.id, job_id=self.job_id)
        reaper = Reaper(subreaper=True) if self._track_processes else None
        if reaper is not None:  # orphans of agents re-parent to us, where no cgroup holds them
            reaper.start()
        background = [asyncio.create_task(t) for t in (recorder.run(), self._heartbeat(), self._watch_control())]
        recorder.log(self.job_id, "info", f"executor started (pid {os.getpid()}, host {hostname()})",
                     executor_id=self.id)
        try:
            await self.db(self.store.executors.set_executor_state, self.id, "running")
            return await self._work(job, recorder, reaper)
        except StoreUnavailable as exc:
            await pause_for_store(self, job, recorder, exc)
            return EXIT_STORE_UNAVAILABLE
        finally:
            for task in background:
                task.cancel()
            await asyncio.wait(background, timeout=10)  # bounded: a stuck helper must not keep us alive
            await self._last_flush(recorder)
            if reaper is not None:
                reaper.close()
            if listener is not None:
                listener.stop()

    async def _last_flush(self, recorder: Recorder) -> None:
        """Write what is still buffered; if the store is gone, say in executor.log what was not written
        (results of units that did finish: those units run again on resume)."""
        try:
            await recorder.flush()
        except Exception as exc:
            log.error("could not write %s to the store (%s)", recorder.describe_pending(), describe(exc))

    async def _release_worktrees(self, runner: UnitRunner, recorder: Recorder) -> None:
        """Git forgets the run's worktrees before the job ends; their files are deleted after it
        (`_delete_worktrees`), so the job's results do not wait for thousands of unlinks."""
        try:
            await asyncio.to_thread(runner.release_worktrees, True)
        except Exception as exc:  # the next start removes them (they are this dead executor's then)
            recorder.log(self.job_id, "warning", f"could not remove idle worktrees: {exc}", executor_id=self.id)

    async def _delete_worktrees(self, runner: UnitRunner, recorder: Recorder) -> None:
        started = time.monotonic()
        try:
            removed = await asyncio.to_thread(runner.delete_released_worktrees)
        except Exception as exc:  # what is left under worktrees/.trash goes with the next start or `abp clean`
            recorder.log(self.job_id, "warning", f"could not delete released worktrees: {exc}", executor_id=self.id)
            return
        if removed:  # thousands of files each: said, with its time, next to the checkouts' line
            recorder.log(self.job_id, "info", f"removed {removed} idle worktree(s) in "
                         f"{time.monotonic() - started:.1f}s", executor_id=self.id)
        await recorder.flush()

    async def _prepare_worktrees(self, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> None:
        """Check out this executor's worktrees (one per unit it may run at once, no more than there
        are pending units) before the pool claims; a failure is logged: attempts make their own."""
        counts = await self.db(self.store.units.count_units, self.job_id)
        count = min(job.concurrency, counts.get(UnitStatus.PENDING, 0))
        started = time.monotonic()
        try:
            made = await asyncio.to_thread(runner.prepare_worktrees, count)
        except Exception as exc:
            recorder.log(self.job_id, "warning", f"could not prepare worktrees: {exc}", executor_id=self.id)
            return
        if made:
            recorder.log(self.job_id, "info", f"checked out {made} worktree(s) of the base in "
                         f"{time.monotonic() - started:.1f}s", executor_id=self.id)

    async def _prune_worktrees(self, job: JobRecord, recorder: Recorder) -> None:
        """Remove the worktrees of this job's dead executors (a failure is logged: units still run)."""
        live = {r.id for r in await self.db(live_executors, self.store, self.settings, self.job_id)} | {self.id}
        try:
            pruned = await asyncio.to_thread(prune_dead_worktrees, self.settings, job, live)
        except Exception as exc:
            recorder.log(self.job_id, "warning", f"could not remove dead executors' worktrees: {exc}",
                         executor_id=self.id)
            return
        if pruned:
            recorder.log(self.job_id, "info", f"removed {len(pruned)} worktree(s) of executors that are gone",
                         executor_id=self.id)

    async def _run_batches(self, job: JobRecord, runner: UnitRunner, recorder: Recorder,
                           provider: BatchProvider) -> StopReason | None:
        """A `--batch-api` job: the batch loop instead of the pool (None: fall back to the pool). One loop per
        job: a joined executor leaves (two loops could both resubmit an intent row the provider never saw)."""
        if self.join:
            recorder.log(job.id, "warning", "a batch_api job runs one executor; this joined one leaves",
                         executor_id=self.id)
            await provider.aclose()
            return StopReason.REQUESTED
        from agentic_batch.engine.batch_loop import BatchLoop  # batch-API jobs only: not in every executor's start-up

        try:
            return await BatchLoop(self, job, runner, recorder, provider).run()
        finally:
            await provider.aclose()

    async def _work(self, job: JobRecord, recorder: Recorder, reaper: Reaper | None) -> int:
        """Build the worker, run the pool, set the job's final status."""
        try:
            worker = self._worker or get_worker_kind(job.worker).build(job.worker_options)
            provider = None
            if job.batch_api:
                from agentic_batch.batchapi.registry import build_provider

                provider = build_provider(job.worker, job.worker_options)
        except AbpError as exc:
            recorder.log(self.job_id, "error", f"cannot build the {job.worker} worker: {exc.one_line()}",
                         executor_id=self.id)
            await recorder.flush()
            await self.db(self.store.jobs.update_job, self.job_id, expect=[JobStatus.RUNNING], status=JobStatus.FAILED,
                          error=exc.one_line(), finished_at=time.time())
            return 1
        if job.isolated:
            await self._prune_worktrees(job, recorder)
        self.gate = RateGate(job.rpm, job.tpm)
        runner = UnitRunner(job, worker, recorder, self.settings, reaper=reaper, executor_id=self.id,
                            gate=self.gate)
        runner.defer_exits = True  # an agent's exit after its result overlaps the next unit (settled below)
        runner.start_preparing()
        if job.isolated:
            await self._prepare_worktrees(job, runner, recorder)
        self._pool = pool = Pool(self, job, runner, recorder)
        try:
            stopped = await self._run_batches(job, runner, recorder, provider) if provider is not None else None
            if stopped is None:  # not a batch job, or its batches fell back to the online path
                stopped = await pool.run()
            await runner.settle_exits()  # the job ends when its agents have: none still exiting
            if job.isolated:  # before the job can end: its finished state has no worktree left
                await self._release_worktrees(runner, recorder)
            await recorder.flush()
            if self.state.store_lost is not None:  # gave up while draining: never "finish" such a run
                raise self.state.store_lost
            # a request that arrived after the pool ended (a cancel read during the last flush) counts too
            await finish(self, job, runner, recorder, self.state.reason or stopped)
            await recorder.flush()
            if job.isolated:
                await self._delete_worktrees(runner, recorder)
        except StoreUnavailable:
            # the store call that gave up may have come from anywhere in the pool: stop every agent now
            # (cancelling a unit kills its process group); their units go back to PENDING on pause
            # bounded: a unit slow to die must not keep the pause from being recorded
            if stuck := await pool.cancel_inflight(UNIT_STOP_WAIT):
                log.warning("%d unit task(s) still stopping after %.0f s; recording the pause anyway",
                            len(stuck), UNIT_STOP_WAIT)
            raise
        finally:
            self._pool = None
            await runner.settle_exits(kill=True)  # on the way out after an error: at once
            await close_worker(worker)
        return 0
