"""The executor's loop for `--batch-api` jobs: pack pending units into provider batches, poll them,
apply their results. Chosen by the executor instead of the `Pool` when the job has `batch_api`.

Never submit a unit twice, never lose one:
- `store.batches.open_batch` writes the intent row (tag) and leases the units to `batch:<id>` in one
  transaction, BEFORE anything is uploaded; the provider id is recorded right after the create call.
- On start (a resume after kill -9), live rows are picked up where they were; an intent row without a
  provider id is looked up by its tag at the provider (`find`) and adopted, or submitted (once) if the
  provider has no such batch. A create that failed ambiguously (timeout, 5xx) takes the same path.
- Units of an ended batch that got no result (expired, cancelled, missing) go back to PENDING without
  spending a retry; results are fenced by owner and attempt like online ones.
A stop (`abp stop`, SIGTERM) leaves the batches running at the provider; `abp cancel` cancels them.
A batch still running long after the providers' 24-hour window (`ABP_BATCH_OVERDUE_SECONDS`, 25 h) is
cancelled at the provider, so its units come back PENDING instead of waiting on it for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentic_batch.aio import wait_event
from agentic_batch.config import float_env
from agentic_batch.batchapi.provider import (
    AdoptionPending,
    BatchProvider,
    BatchRequest,
    BatchState,
    BatchStatus,
    Disposition,
    make_custom_id,
    parse_custom_id,
)
from agentic_batch.engine.batch_units import DEFAULT_OUTPUT_TOKENS, BatchUnits
from agentic_batch.engine.outage import StoreUnavailable
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.retry import backoff_delay
from agentic_batch.engine.run_state import Mode, StopReason
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.spec import BatchFallback
from agentic_batch.states import UnitStatus
from agentic_batch.store import BatchRecord, JobRecord, UnitRecord
from agentic_batch.store.records import batch_owner
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitOutcome
from agentic_batch.workers.pricing import Pricing
from agentic_batch.workers.registry import get_worker_kind
from agentic_batch.workers.tool_loop import ModelCallError

if TYPE_CHECKING:
    from agentic_batch.engine.executor import Executor

log = logging.getLogger(__name__)

#: Tests only: `os._exit` at this point of a submission (`after_create`: the provider made the batch,
#: its id is not recorded yet), to prove adoption.
CRASH_ENV = "ABP_TEST_BATCH_CRASH"
#: Create failures after which the batch may exist all the same: look for it before submitting again.
AMBIGUOUS = frozenset({FailureKind.timeout, FailureKind.connection, FailureKind.server_error,
                       FailureKind.malformed_response, None})
#: Results applied per store transaction while reading a results file (memory stays flat).
CHUNK = 500


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os._exit(17)


@dataclass
class _Tracked:
    batch_id: int
    provider_id: str | None
    next_poll: float
    delay: float
    #: `find` answered AdoptionPending for this intent row already (logged once).
    adoption_pending: bool = False
    #: When the provider accepted it (epoch seconds); None for an intent row not yet adopted.
    submitted_at: float | None = None
    #: Cancelled by us for running past the provider's window (asked once).
    overdue: bool = False


async def find_batch(provider: BatchProvider, row: BatchRecord) -> list[str]:
    """The provider's batches made under an intent row's tag. `created_after` is the row's own time (each
    provider allows for its clock); `count` lets a provider skip batches of another size unread."""
    return await provider.find(row.tag, created_after=row.created_at, count=row.units or None)


class BatchLoop:
    def __init__(self, ex: Executor, job: JobRecord, runner: UnitRunner, recorder: Recorder,
                 provider: BatchProvider) -> None:
        self.ex, self.job, self.recorder, self.provider = ex, job, recorder, provider
        self.state = ex.state
        options = get_worker_kind(job.worker).parse_options(job.worker_options)
        self.pricing = Pricing(options.model, options.price_in, options.price_out)
        self.units = BatchUnits(runner, provider, self.pricing, options.system_prompt,
                                getattr(options, "max_tokens", None))
        self.poll_start = float(job.batch_poll_s or 30.0)
        self.poll_cap = max(300.0, self.poll_start)
        #: Both providers end a batch within 24 h (completed or expired); past this, something is wrong.
        self.overdue_s = float_env("ABP_BATCH_OVERDUE_SECONDS", 25 * 3600.0)
        self.size = min(job.batch_size or provider.max_requests, provider.max_requests)
        self.tracked: dict[int, _Tracked] = {}
        self.submit_after = 0.0
        self.refusals = 0
        self.first_submitted: float | None = None

    def _log(self, level: str, message: str, **extra: Any) -> None:
        self.recorder.log(self.job.id, level, message, executor_id=self.ex.id, **extra)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> StopReason | None:
        """Work until every unit is done or a stop is requested. None: fall back to the online pool."""
        ex, state = self.ex, self.state
        await self._pick_up()
        while state.running:
            now = time.time()
            if self._fallback_due(now):
                await self._fall_back()
                return None if state.running else state.reason
            submitting = not state.held() and now >= self.submit_after and await self._budget_room() != 0.0
            if submitting and await self._submit_next():
                continue  # more may be pending: pack the next batch at once
            await self._poll_due(now)
            if not self.tracked:
                counts = await ex.db(ex.store.units.count_units, self.job.id)
                if counts[UnitStatus.PENDING] == 0 and counts[UnitStatus.RUNNING] == 0:
                    return StopReason.FINISHED
                if counts[UnitStatus.PENDING] and await self._budget_room() == 0.0:
                    self._log("warning", f"budget reached: ${await self._committed():.4f} of "
                                         f"${self.job.budget_usd:.4f} spent or projected; job paused")
                    state.request(Mode.STOP, StopReason.BUDGET, "budget reached")
                    break
            await self._sleep()
        if state.mode is Mode.CANCEL:
            await self._cancel_all("job cancelled")
        elif self.tracked:
            self._log("info", f"{len(self.tracked)} batch(es) left running at the provider; `abp resume` picks "
                              "them up")
        return state.reason

    async def _sleep(self) -> None:
        """Until the next poll is due, at most a second (control requests are read every second)."""
        due = min((t.next_poll for t in self.tracked.values()), default=time.time() + 1.0)
        wake_at = min(due, time.time() + 1.0)
        if time.time() < self.submit_after:
            wake_at = min(wake_at, self.submit_after)
        self.state.wake.clear()
        await wait_event(self.state.wake, max(0.01, wake_at - time.time()))

    # -- picking up after a restart ---------------------------------------------------------------

    async def _pick_up(self) -> None:
        ex = self.ex
        rows = await ex.db(ex.store.batches.list_batches, self.job.id)
        self.first_submitted = min((r.created_at for r in rows), default=None)
        for row in reversed(rows):  # oldest first
            if row.state in ("done", "refused"):
                continue
            self.tracked[row.id] = _Tracked(row.id, row.provider_id, time.time(), self.poll_start,
                                            submitted_at=row.submitted_at)
            if row.provider_id is not None:
                self._log("info", f"picked up batch {row.id} ({row.provider_id}, {row.units} unit(s), "
                                  f"{row.provider_status or row.state})")

    async def _recover_intent(self, row: BatchRecord) -> str | None:
        """An intent row without a provider id: adopt the provider's batch with its tag, else submit its
        units now (once: the id is recorded before anything else happens)."""
        found = await find_batch(self.provider, row)
        if found:
            provider_id = found[-1]  # oldest: a second one can only be a resubmission that raced
            await self.ex.db(self.ex.store.batches.update_batch, row.id, provider_id=provider_id,
                             state="validating", submitted_at=time.time())
            self._log("warning", f"batch {row.id} was created at the provider ({provider_id}) but not recorded "
                                 "(crash or lost answer): adopted, not submitted again")
            return provider_id
        units = await self.ex.db(self.ex.store.batches.leased_units, row.id)
        if not units:
            await self._close(row.id, "done")
            return None
        self._log("info", f"batch {row.id} never reached the provider; submitting its {len(units)} unit(s)")
        return await self._send(row, units, budget_room=None)

    # -- submitting --------------------------------------------------------------------------------

    async def _committed(self) -> float:
        ex = self.ex
        spent = (await ex.db(ex.store.units.unit_totals, self.job.id))["cost_usd"]
        return float(spent) + (await ex.db(ex.store.batches.batch_totals, self.job.id))["projected_usd"]

    async def _budget_room(self) -> float | None:
        """Dollars left for the next batch (spent + the projection of live batches counted); None: no budget."""
        if self.job.budget_usd is None:
            return None
        return max(0.0, self.job.budget_usd - await self._committed())

    async def _output_tokens(self) -> int:
        ex = self.ex
        totals = await ex.db(ex.store.units.unit_totals, self.job.id)
        done = (await ex.db(ex.store.units.count_units, self.job.id))[UnitStatus.COMPLETED]
        return int(totals["tokens_out"] // done) if done else DEFAULT_OUTPUT_TOKENS

    async def _submit_next(self) -> bool:
        """Open the next batch (intent row + leased units) and submit it; False when nothing was pending."""
        ex = self.ex
        opened = await ex.db(ex.store.batches.open_batch, self.job.id, self.provider.kind, self.size)
        if opened is None:
            return False
        row, units = opened
        self.tracked[row.id] = _Tracked(row.id, None, time.time() + self.poll_start, self.poll_start)
        await self._send(row, units, budget_room=await self._budget_room())
        return True

    async def _send(self, row: BatchRecord, units: list[UnitRecord], budget_room: float | None) -> str | None:
        ex, store = self.ex, self.ex.store
        packed = self.units.pack(units, max_bytes=self.provider.max_bytes, budget_room=budget_room,
                                 output_tokens=await self._output_tokens())
        if packed.failed:
            recorder = Recorder(store, ex.db, owner=row.owner, job_id=self.job.id)
            for unit, outcome in packed.failed:
                recorder.result(await self.units.result(unit, outcome, recorder, batch_id=row.id, provider_id=None))
            await recorder.flush()
        if packed.left_over:
            await ex.db(store.units.release_units, row.owner, packed.left_over)
        if not packed.requests:
            await self._close(row.id, "done")
            return None
        await ex.db(store.batches.update_batch, row.id, units=len(packed.requests), projected_usd=packed.projected_usd)
        requests = [BatchRequest(make_custom_id(u.id, u.attempt), body) for u, body in packed.requests]
        del packed
        _crash_point("before_create")
        try:
            provider_id = await self.provider.submit(requests, tag=row.tag)
        except ModelCallError as exc:
            await self._create_failed(row, exc)
            return None
        except Exception as exc:  # not the SDK's (a dropped stream, a bug): it may exist; look before resubmitting
            await self._create_failed(row, ModelCallError(f"{type(exc).__name__}: {exc}", ErrorClass.retryable))
            return None
        _crash_point("after_create")
        now = time.time()
        await ex.db(store.batches.update_batch, row.id, provider_id=provider_id, state="validating", submitted_at=now)
        self.first_submitted = self.first_submitted or now
        self.refusals = 0
        tracked = self.tracked.setdefault(row.id, _Tracked(row.id, None, now + self.poll_start, self.poll_start))
        tracked.provider_id, tracked.submitted_at = provider_id, now
        self._log("info", f"batch {row.id} submitted: {len(requests)} unit(s) as {provider_id}")
        return provider_id

    async def _create_failed(self, row: BatchRecord, exc: ModelCallError) -> None:
        """The create call failed. Refused (429, 4xx): the units go back (or fail, if the refusal is
        permanent). Otherwise it may have been made: keep the intent row; the next poll looks for it."""
        ex, store = self.ex, self.ex.store
        if exc.kind in AMBIGUOUS:
            self._log("warning", f"batch {row.id}: create failed ({exc.message}); it may exist all the same: "
                                 "looking for it by its tag before submitting again")
            return
        self.tracked.pop(row.id, None)
        if exc.error_class is ErrorClass.permanent:
            units = await ex.db(store.batches.leased_units, row.id)
            recorder = Recorder(store, ex.db, owner=row.owner, job_id=self.job.id)
            outcome = UnitOutcome.failure(f"the provider refused the batch: {exc.message}", exc.error_class, exc.kind)
            for unit in units:
                recorder.result(await self.units.result(unit, outcome, recorder, batch_id=row.id, provider_id=None))
            await recorder.flush()
        released = await ex.db(store.units.release_units, row.owner)
        await ex.db(store.batches.update_batch, row.id, state="refused", error=exc.message, finished_at=time.time())
        self.refusals += 1
        wait = backoff_delay(self.refusals, self.poll_start, self.poll_cap)
        self.submit_after = time.time() + max(wait, exc.retry_after or 0.0)
        self._log("warning", f"batch {row.id} refused by the provider ({exc.message}); {released} unit(s) back "
                             f"to PENDING, next batch in {self.submit_after - time.time():.0f} s")

    # -- polling and results -----------------------------------------------------------------------

    async def _poll_due(self, now: float) -> None:
        for tracked in sorted(self.tracked.values(), key=lambda t: t.next_poll):
            if tracked.next_poll > now or not self.state.running:
                continue
            tracked.delay = min(tracked.delay * 1.5, self.poll_cap)
            tracked.next_poll = now + tracked.delay
            try:
                await self._poll(tracked)
            except ModelCallError as exc:
                self._log("warning", f"batch {tracked.batch_id}: {exc.message}; next check in {tracked.delay:.0f} s")
            except AdoptionPending as exc:  # its units stay leased to the intent row: nothing is resubmitted
                tracked.next_poll = now + max(0.1, min(exc.retry_after, tracked.delay))
                if not tracked.adoption_pending:
                    tracked.adoption_pending = True
                    self._log("info", f"batch {tracked.batch_id}: not recorded and not found at the provider yet "
                                      f"({exc}); its units wait, looking again every few seconds")
            except StoreUnavailable:
                raise
            except Exception as exc:  # e.g. a results stream cut mid-file: the next check reads it again
                log.warning("batch %s: %r", tracked.batch_id, exc, exc_info=True)
                self._log("warning", f"batch {tracked.batch_id}: {type(exc).__name__}: {exc}; next check in "
                                     f"{tracked.delay:.0f} s")

    async def _poll(self, tracked: _Tracked) -> None:
        ex = self.ex
        if tracked.provider_id is None:
            row = await ex.db(ex.store.batches.get_batch, tracked.batch_id)
            if row is None:
                self.tracked.pop(tracked.batch_id, None)
                return
            tracked.provider_id = await self._recover_intent(row)
            if tracked.provider_id is None:
                self.tracked.pop(tracked.batch_id, None)
            return
        status = await self.provider.status(tracked.provider_id)
        await ex.db(ex.store.batches.update_batch, tracked.batch_id, state=status.state.value,
                    provider_status=status.provider_status, counts=status.counts, error=status.error)
        if status.state.finished:
            await self._ingest(tracked, status)
        elif (not tracked.overdue and tracked.submitted_at is not None
              and time.time() - tracked.submitted_at > self.overdue_s):
            hours = (time.time() - tracked.submitted_at) / 3600.0
            await self.provider.cancel(tracked.provider_id)  # a failed call is asked again at the next poll
            tracked.overdue = True
            self._log("warning", f"batch {tracked.batch_id} ({tracked.provider_id}) still {status.provider_status} "
                                 f"{hours:.1f} h after submission, past the provider's 24 h window: cancelled at "
                                 "the provider; its units go back to PENDING for the next batch (no retry spent)")

    async def _ingest(self, tracked: _Tracked, status: BatchStatus) -> None:
        """Apply an ended batch's results in chunks, then give back every unit that got none."""
        ex, store = self.ex, self.ex.store
        owner = batch_owner(tracked.batch_id)
        assert tracked.provider_id is not None
        recorder = Recorder(store, ex.db, owner=owner, job_id=self.job.id)
        applied = 0
        if status.state is BatchState.failed:
            outcome = UnitOutcome.failure(f"the provider failed the batch: {status.error or 'no reason given'}",
                                          ErrorClass.retryable, FailureKind.bad_request)
            for unit in await ex.db(store.batches.leased_units, tracked.batch_id):
                recorder.result(await self.units.result(unit, outcome, recorder, batch_id=tracked.batch_id,
                                                        provider_id=tracked.provider_id))
            await recorder.flush()
        else:
            chunk = []
            async for result in self.provider.results(tracked.provider_id):
                chunk.append(result)
                if len(chunk) >= CHUNK:
                    applied += await self._apply(chunk, recorder, tracked)
                    chunk = []
            applied += await self._apply(chunk, recorder, tracked)
        back = await ex.db(store.units.release_units, owner)
        await self._close(tracked.batch_id, "done")
        self.tracked.pop(tracked.batch_id, None)
        self._log("info", f"batch {tracked.batch_id} {status.provider_status}: {applied} result(s) applied"
                          + (f", {back} unit(s) not run back to PENDING (no retry spent)" if back else ""))

    async def _apply(self, chunk: list[Any], recorder: Recorder, tracked: _Tracked) -> int:
        ex = self.ex
        ids = {r.custom_id: parse_custom_id(r.custom_id) for r in chunk}
        units = await ex.db(ex.store.batches.units_by_id, [p[0] for p in ids.values() if p])
        owner = batch_owner(tracked.batch_id)
        applied = 0
        for result in chunk:
            parsed = ids[result.custom_id]
            unit = units.get(parsed[0]) if parsed else None
            if parsed is None or unit is None or (unit.lease_owner, unit.attempt, unit.status) != (
                    owner, parsed[1], UnitStatus.RUNNING):
                continue  # not ours (any more): a stale attempt, a cancelled unit
            if result.disposition in (Disposition.expired, Disposition.cancelled):
                continue  # released with the rest after the file is read
            recorder.result(await self.units.result(unit, self.units.outcome(result), recorder,
                                                    batch_id=tracked.batch_id, provider_id=tracked.provider_id))
            applied += 1
        await recorder.flush()
        return applied

    async def _close(self, batch_id: int, state: str) -> None:
        await self.ex.db(self.ex.store.batches.update_batch, batch_id, state=state, finished_at=time.time())

    # -- cancel and fallback -----------------------------------------------------------------------

    async def _cancel_all(self, why: str) -> None:
        """Cancel every live batch at the provider (its units were cancelled in the store already)."""
        await cancel_provider_batches(self.ex.store, self.provider, self.job.id, db=self.ex.db)
        self._log("info", f"{why}: provider batches cancelled")
        self.tracked.clear()

    def _fallback_due(self, now: float) -> bool:
        return (self.job.batch_fallback == BatchFallback.online and self.first_submitted is not None
                and now - self.first_submitted >= float(self.job.batch_fallback_after_s or 86_400.0))

    async def _fall_back(self) -> None:
        """Cancel what is still running at the provider, apply what it did finish, and hand the rest
        (back to PENDING) to the online pool."""
        self._log("warning", f"batch fallback: {len(self.tracked)} batch(es) not done after "
                             f"{self.job.batch_fallback_after_s:g} s; cancelling them and running the rest online")
        for tracked in list(self.tracked.values()):
            if tracked.provider_id is None:
                row = await self.ex.db(self.ex.store.batches.get_batch, tracked.batch_id)
                try:
                    found = [] if row is None else await find_batch(self.provider, row)
                except AdoptionPending:  # running online now; a batch made all the same is never applied
                    found = []
                tracked.provider_id = found[-1] if found else None
            if tracked.provider_id is not None:
                await self.provider.cancel(tracked.provider_id)
        while self.tracked and self.state.running:
            for tracked in list(self.tracked.values()):
                if tracked.provider_id is None:
                    await self.ex.db(self.ex.store.units.release_units, batch_owner(tracked.batch_id))
                    await self._close(tracked.batch_id, "done")
                    self.tracked.pop(tracked.batch_id)
                    continue
                status = await self.provider.status(tracked.provider_id)
                if status.state.finished:
                    await self._ingest(tracked, status)
            if self.tracked:
                await asyncio.sleep(min(self.poll_start, 5.0))


async def cancel_provider_batches(store: Any, provider: BatchProvider, job_id: int, db: Any = None) -> int:
    """Cancel the job's live batches at the provider and close their rows; their units (already
    CANCELLED by `abp cancel`) stay cancelled. Returns how many were cancelled."""
    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await db(fn, *args, **kwargs) if db is not None else fn(*args, **kwargs)

    cancelled = 0
    for row in await call(store.batches.list_batches, job_id, live_only=True):
        provider_id = row.provider_id
        if provider_id is None:
            try:
                found = await find_batch(provider, row)
            except AdoptionPending:  # cannot be told apart yet: if it exists it runs, its results unused
                found = []
            provider_id = found[-1] if found else None
        if provider_id is not None:
            await provider.cancel(provider_id)
            cancelled += 1
        await call(store.units.release_units, row.owner)  # any unit not cancelled yet: back to PENDING
        await call(store.batches.update_batch, row.id, state="done", provider_id=provider_id,
                   provider_status="cancelling", error="job cancelled", finished_at=time.time())
    return cancelled


def cancel_batches_now(store: Any, job: JobRecord) -> int:
    """`abp cancel` of a job no executor works on (paused with batches at the provider): cancel them from
    the calling process. Runs its own event loop in a thread, so an async caller (REST, MCP) can call it."""
    from agentic_batch.batchapi.registry import build_provider

    if not store.batches.list_batches(job.id, live_only=True):
        return 0
    provider = build_provider(job.worker, job.worker_options)

    async def cancel() -> int:
        try:
            return await cancel_provider_batches(store, provider, job.id)
        finally:
            await provider.aclose()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="abp-batch-cancel") as pool:
        return pool.submit(asyncio.run, cancel()).result()
