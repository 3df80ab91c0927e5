"""The asyncio pool of one executor: claim as many units as there are free slots, run them, account
for their results (budget, adaptive limit, quota hold), and drain on stop.

The pool obeys the executor's `RunState` (its mode and quota hold) and reports to it (the budget
stop, a quota hold); `run()` returns why it stopped, which is what `finish` decides the job's status from.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

from agentic_batch.aio import wait_event
from agentic_batch.engine.limits import AdaptiveLimit, Budget
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.run_state import Mode, StopReason
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.store import JobRecord, UnitRecord, UnitResult
from agentic_batch.states import UnitStatus
from agentic_batch.workers.base import RATE_LIMIT_KINDS

if TYPE_CHECKING:
    from agentic_batch.engine.executor import Executor


class Pool:
    def __init__(self, ex: Executor, job: JobRecord, runner: UnitRunner, recorder: Recorder) -> None:
        self.ex = ex
        self.state = ex.state
        self.job = job
        self.runner = runner
        self.recorder = recorder
        self.limit = AdaptiveLimit(job.concurrency)
        #: Live executors on the job: each takes at most its share of the job-wide concurrency, so
        #: one executor cannot keep every slot (the claim itself caps the job's total).
        self.share = 1
        self.budget = Budget(job.budget_usd, 0.0, 0)
        #: Running attempts and their units (the unit's number is what log lines show users).
        self.inflight: dict[asyncio.Task[Any], UnitRecord] = {}

    async def refresh_budget(self) -> None:
        """Job-wide spend and in-flight units from the store (all executors of the job count)."""
        if self.budget.limit is None:
            return
        totals = await self.ex.db(self.ex.store.units.unit_totals, self.job.id)
        counts = await self.ex.db(self.ex.store.units.count_units, self.job.id)
        # Units the result cache completed cost nothing: counted, they would shrink the cost per unit
        # the budget projects with (9,000 free units and one $1 unit is not $0.0001 a unit).
        cached = await self.ex.db(self.ex.store.cache.cached_count, self.job.id) if self.job.cache else 0
        self.budget.refresh(totals["cost_usd"], counts[UnitStatus.COMPLETED] + counts[UnitStatus.FAILED] - cached,
                            counts[UnitStatus.RUNNING] - len(self.inflight))

    async def stop_lost_units(self) -> None:
        """Kill the agents of units that are no longer ours: cancelled one by one by a user, or taken
        over by another executor after our lease lapsed. Their results could not be written anyway."""
        running = {task: unit for task, unit in self.inflight.items() if not task.done()}
        if not running:
            return
        held = await self.ex.db(self.ex.store.units.still_leased, self.ex.id, [unit.id for unit in running.values()])
        for task, unit in running.items():
            if unit.id not in held and not task.done():
                task.cancel()
                self.recorder.log(self.job.id, "info", f"unit {unit.number} was cancelled or taken "
                                  "over; its agent was stopped", unit_id=unit.id, executor_id=self.ex.id)

    async def _collect(self, task: asyncio.Task[Any]) -> None:
        self.inflight.pop(task, None)
        if not task.cancelled():
            await self._account(task.result())

    async def run(self) -> StopReason:
        """Work until nothing is left or a stop is requested; then drain. Returns why it stopped."""
        ex, state = self.ex, self.state
        await self.refresh_budget()
        while state.running:
            held = state.held()
            free = self.budget.how_many(len(self.inflight), self.slots() - len(self.inflight))
            if free > 0 and not held:
                # A finished unit stays RUNNING in the store until its result is written, and the claim
                # caps the job's RUNNING units at its concurrency: the buffered results are written and
                # the freed slots claimed in one transaction.
                claim = functools.partial(ex.store.units.claim_units, ex.id, [self.job.id], free,
                                          ex.settings.lease_seconds)
                claimed = await self.recorder.flush(then=claim) or []
                for unit in claimed:
                    self.inflight[asyncio.create_task(self.runner.run_unit(unit))] = unit
            if not self.inflight:
                if self.budget.how_many(0, 1) == 0:
                    self.recorder.log(self.job.id, "warning", f"budget reached: ${self.budget.spent:.4f} of "
                                      f"${self.budget.limit:.4f} spent; job paused", executor_id=ex.id)
                    state.request(Mode.STOP, StopReason.BUDGET, "budget reached")
                    break
                if await self._nothing_left():
                    return StopReason.FINISHED
                await self._idle_wait(held)
                continue
            state.wake.clear()
            waiter = asyncio.create_task(state.wake.wait())
            done, _ = await asyncio.wait({*self.inflight, waiter}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in done:
                if task is not waiter:
                    await self._collect(task)
        await self._drain()
        assert state.reason is not None  # only a request (which records its reason) leaves the loop
        return state.reason

    def slots(self) -> int:
        """How many units this executor may run at once: the adaptive limit, within its fair share."""
        return min(self.limit.value(), -(-self.job.concurrency // max(1, self.share)))

    async def _account(self, result: UnitResult) -> None:
        """Feed an attempt's result to the budget, the adaptive limit and the quota hold."""
        ex = self.ex
        self.budget.record(result.cost_usd, result.status in (UnitStatus.COMPLETED, UnitStatus.FAILED))
        if result.error_kind in RATE_LIMIT_KINDS and self.limit.rate_limited():
            self.recorder.log(self.job.id, "warning", f"rate limited: in-flight limit lowered to "
                              f"{self.limit.current}", executor_id=ex.id)
        if result.error_class == "quota" and result.not_before:
            until = self.state.hold(result.not_before)
            await ex.db(ex.store.jobs.update_job, self.job.id, hold_until=until)
            self.recorder.log(self.job.id, "warning", "quota reached: no new units until "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))} ({result.error})",
                              executor_id=ex.id)

    async def _nothing_left(self) -> bool:
        await self.recorder.flush()
        counts = await self.ex.db(self.ex.store.units.count_units, self.job.id)
        # After a store outage: a claim may have committed just as the store went away, its answer lost;
        # those units are leased to us but nothing runs them (and heartbeats would renew them forever).
        lost_claims = counts[UnitStatus.RUNNING] and self.ex.outage.outages and not self.inflight
        if lost_claims and (released := await self.ex.db(self.ex.store.units.release_units, self.ex.id)):
            self.recorder.log(self.job.id, "warning", f"{released} unit(s) claimed during a store outage "
                              "were never started; returned to PENDING", executor_id=self.ex.id)
            return False
        return counts[UnitStatus.PENDING] == 0 and counts[UnitStatus.RUNNING] == 0

    async def _idle_wait(self, held: bool) -> None:
        """Nothing to run now: units back off, a quota holds, or other executors hold the leases."""
        delay = self.ex.idle_poll
        if not held:
            nb = await self.ex.db(self.ex.store.units.next_not_before, self.job.id)
            if nb is not None:
                delay = min(delay, max(0.01, nb - time.time()))
        elif self.state.hold_until:
            delay = min(delay, max(0.01, self.state.hold_until - time.time()))
        self.state.wake.clear()
        await wait_event(self.state.wake, delay)

    async def cancel_inflight(self, timeout: float) -> set[asyncio.Task[Any]]:
        """Cancel every running attempt (which kills its processes) and wait at most `timeout` for them:
        an agent that ignores its cancellation must not keep the executor (and its job) alive. Returns
        the attempts still not done."""
        for task in self.inflight:
            task.cancel()
        if not self.inflight:
            return set()
        _, stuck = await asyncio.wait(set(self.inflight), timeout=timeout)
        return stuck

    async def _drain(self) -> None:
        """Stopping: let in-flight units finish within the grace period, then cancel and release them."""
        ex, inflight, state = self.ex, self.inflight, self.state
        if inflight and state.mode is Mode.STOP:
            self.recorder.log(self.job.id, "info", f"stopping: waiting up to {ex.settings.stop_grace_seconds:g}s "
                              f"for {len(inflight)} running unit(s)", executor_id=ex.id)
            deadline = time.monotonic() + ex.settings.stop_grace_seconds
            while inflight and state.mode is Mode.STOP and time.monotonic() < deadline:
                state.wake.clear()
                waiter = asyncio.create_task(state.wake.wait())
                done, _ = await asyncio.wait({*inflight, waiter}, timeout=deadline - time.monotonic(),
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                for task in done:
                    if task is not waiter:
                        await self._collect(task)
        if inflight:
            stuck = await self.cancel_inflight(ex.settings.cancel_grace_seconds)
            for task in stuck:
                self.recorder.log(self.job.id, "warning", f"unit {inflight[task].number}'s attempt did not stop within "
                                  f"{ex.settings.cancel_grace_seconds:g}s of its cancellation; released anyway",
                                  unit_id=inflight[task].id, executor_id=ex.id)
            await self.recorder.flush()
            released = await ex.db(ex.store.units.release_units, ex.id, [unit.id for unit in inflight.values()])
            self.recorder.log(self.job.id, "info", f"released {released} unfinished unit(s) back to PENDING",
                              executor_id=ex.id)
