"""One attempt at one unit: render its prompt, give the worker a context, enforce the timeout,
clean up every process the attempt started, and decide what happens to the unit.

Shared by the executor's pool, the synchronous test run and the reduce step, so all three behave
the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.engine import structured
from agentic_batch.engine.isolated import NO_OWNER, IsolatedAttempt, feedback_section, job_worktrees
from agentic_batch.engine.outcome import (bound_outcome, crash_outcome, output_file, short_traceback,
                                          worker_output_cap)
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.reaper import Reaper, UnitProcesses
from agentic_batch.engine.retry import decide
from agentic_batch.errors import AbpError
from agentic_batch.isolation import JobWorktrees
from agentic_batch.prompts import render
from agentic_batch.store import JobRecord, UnitRecord, UnitResult
from agentic_batch.textcap import DEFAULT_MAX_OUTPUT_BYTES
from agentic_batch.workers.base import (CallGate, ErrorClass, ExitTail, FailureKind, OpenGate, UnitContext, UnitOutcome,
                                        Worker)
from agentic_batch.workers.process import SharedProcesses
from agentic_batch.states import UnitStatus

log = logging.getLogger(__name__)


def job_workspace(settings: Settings, job_id: int) -> Path:
    path = settings.job_dir(job_id) / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    return path


def item_directory(job: JobRecord, payload: dict[str, Any]) -> Path | None:
    """For a file source, the item's directory (an agent works next to its file); else None."""
    if job.source.get("kind") == "files" and isinstance(payload.get("path"), str):
        return Path(payload["path"]).parent
    return None


def unit_workspace(job: JobRecord, payload: dict[str, Any], shared: Path) -> Path:
    """For a file source, the item's directory; otherwise the job's (shared) workspace."""
    return item_directory(job, payload) or shared


def _default_quota_wait() -> float:
    """For jobs stored before `quota_wait_s` existed. Imported here: the JobSpec (and every source kind it
    names) is not part of an executor's start-up."""
    from agentic_batch.spec import job_default

    return float(job_default("quota_wait_s"))


class UnitRunner:
    """Runs attempts for one job with one worker; results go to the recorder."""

    def __init__(self, job: JobRecord, worker: Worker, recorder: Recorder, settings: Settings,
                 reaper: Reaper | None = None, gate: CallGate | None = None,
                 executor_id: str | None = None) -> None:
        self.job = job
        self.worker = worker
        self.recorder = recorder
        self.settings = settings
        self.reaper = reaper
        #: Processes that serve many units (a worker's shared MCP servers): the reaper's, not a unit's.
        self.shared_processes = SharedProcesses(reaper)
        self.gate = gate or OpenGate()
        self.executor_id = executor_id
        self._shared_workspace: Path | None = None
        #: Built once: a Path per unit for each was a tenth of a no-op unit's time on the loop.
        self._job_dir = settings.job_dir(job.id)
        self._workdir = Path(job.workdir)
        self._prepared: asyncio.Future[Any] | None = None
        self._worktrees: JobWorktrees | None = None
        #: Let workers hand over the end of their agent's exit (`UnitContext.defer_exit`): the unit's
        #: result is then recorded, and its slot freed, while the agent still exits. Only the executor's
        #: pool sets it, and it calls `settle_exits()` before the job ends.
        self.defer_exits = False
        #: Deferred exits still running, and the attempts they belong to (their event numbering goes on).
        self._exiting: set[asyncio.Task[None]] = set()
        self._exiting_attempts: set[tuple[int, int | None, int]] = set()

    def start_preparing(self) -> None:
        """Run the worker's optional `prepare()` in a thread now; units wait for it before running."""
        prepare = getattr(self.worker, "prepare", None)
        if prepare is not None and self._prepared is None:
            self._prepared = asyncio.ensure_future(asyncio.to_thread(prepare))

    def prepare_worktrees(self, count: int) -> int:
        """Make `count` worktrees of an isolated job's base for this executor before it claims a unit
        (the whole checkouts, seconds each for a large repository, are paid before the first lease
        is taken, not inside the first units' time). Returns how many were made."""
        if not self.job.isolated or count <= 0:
            return 0
        if self._worktrees is None:
            self._worktrees = job_worktrees(self.job, self.settings)
        return self._worktrees.prepare(self.executor_id or NO_OWNER, count)

    def release_worktrees(self, defer: bool = False) -> int:
        """Remove the idle worktrees of an isolated job's run (call when no attempt is in flight); with
        `defer`, git forgets them now and `delete_released_worktrees()` deletes their files."""
        return self._worktrees.release_idle(defer) if self._worktrees is not None else 0

    def delete_released_worktrees(self) -> int:
        return self._worktrees.delete_released() if self._worktrees is not None else 0

    def render_prompt(self, template: str | None, payload: dict[str, Any], unit: dict[str, Any]) -> str | None:
        if not template:
            return None
        return render(template, payload, unit=unit, job={"id": self.job.id, "name": self.job.name})

    @property
    def shared_workspace(self) -> Path:
        if self._shared_workspace is None:
            self._shared_workspace = job_workspace(self.settings, self.job.id)
        return self._shared_workspace

    @property
    def max_output_bytes(self) -> int:
        return self.job.max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES

    async def attempt(self, *, unit_id: int | None, key: str, seq: int, attempt: int, payload: dict[str, Any],
                      template: str | None, feedback: str | None = None, feedback_kind: str | None = None,
                      extra_vars: dict[str, Any] | None = None,
                      number: int | None = None) -> tuple[UnitOutcome, str | None]:
        """Run one attempt; never raises except CancelledError (after killing its processes).

        Whatever else goes wrong inside (a template, a worker, a schema, building the result) is this
        unit's error, logged with its id and a short traceback; the executor carries on.
        """
        phase = ["rendering the prompt"]
        try:
            return await self._attempt(unit_id=unit_id, key=key, seq=seq, attempt=attempt, payload=payload,
                                       template=template, feedback=feedback, feedback_kind=feedback_kind,
                                       extra_vars=extra_vars, phase=phase,
                                       number=number)
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # a function calling sys.exit() must not end the executor
            outcome = crash_outcome(exc, phase[0])
            log.error("job %s unit %s attempt %s: %s\n%s", self.job.id, number if number is not None else unit_id,
                      attempt, outcome.error,
                      short_traceback(exc))
            emit = self.recorder.emitter(self.job.id, unit_id, attempt)
            emit("error", {"error": outcome.error, "error_class": outcome.error_class,
                           "traceback": short_traceback(exc)})
            return outcome, None
        finally:
            if (self.job.id, unit_id, attempt) not in self._exiting_attempts:
                self.recorder.forget(self.job.id, unit_id, attempt)  # the attempt's event numbering is done

    async def _attempt(self, *, unit_id: int | None, key: str, seq: int, attempt: int, payload: dict[str, Any],
                       template: str | None, feedback: str | None, feedback_kind: str | None,
                       extra_vars: dict[str, Any] | None,
                       phase: list[str], number: int | None = None) -> tuple[UnitOutcome, str | None]:
        if unit_id is None or not self.job.isolated:  # the reduce step works in place
            return await self._run(unit_id=unit_id, key=key, seq=seq, attempt=attempt, payload=payload,
                                   template=template, feedback=feedback, feedback_kind=feedback_kind,
                                   extra_vars=extra_vars, phase=phase, number=number, iso=None)
        phase[0] = "preparing the unit's worktree"
        if self._worktrees is None:
            self._worktrees = job_worktrees(self.job, self.settings)
        iso = IsolatedAttempt(self._worktrees, self.job, self.executor_id, number if number is not None else unit_id,
                              key)
        cancelled = False
        try:
            await iso.open()
            return await self._run(unit_id=unit_id, key=key, seq=seq, attempt=attempt, payload=iso.payload(payload),
                                   template=template, feedback=feedback, feedback_kind=feedback_kind,
                                   extra_vars=extra_vars, phase=phase, number=number, iso=iso)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if cancelled:
                iso.close_now()  # no awaiting once cancelled: the next attempt would remove it anyway
            else:
                await iso.close()

    async def _run(self, *, unit_id: int | None, key: str, seq: int, attempt: int, payload: dict[str, Any],
                   template: str | None, feedback: str | None, feedback_kind: str | None,
                   extra_vars: dict[str, Any] | None, phase: list[str], number: int | None,
                   iso: IsolatedAttempt | None) -> tuple[UnitOutcome, str | None]:
        emit = self.recorder.emitter(self.job.id, unit_id, attempt)
        unit_vars = {"id": unit_id, "key": key, "seq": seq, "attempt": attempt}
        phase[0] = "rendering the prompt"
        try:
            prompt = self.render_prompt(template, {**payload, **(extra_vars or {})}, unit_vars)
        except AbpError as exc:
            emit("error", {"error": exc.one_line(), "error_class": "permanent"})
            return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent, FailureKind.prompt), None
        phase[0] = "preparing the attempt"
        schema = self.job.output_schema if unit_id is not None else None
        if schema is not None and prompt is not None:
            schema_feedback = feedback if feedback_kind == FailureKind.schema_invalid else None
            prompt += structured.instructions(schema, schema_feedback)
        if iso is not None and prompt is not None and feedback and feedback_kind == FailureKind.verify_failed:
            prompt += feedback_section(feedback)
        if iso is not None:  # in the worktree; the job's shared workspace is not made (nothing uses it)
            workspace = iso.workspace(item_directory(self.job, payload))
        else:
            workspace = unit_workspace(self.job, payload, self.shared_workspace)
        processes = UnitProcesses(self.reaper)
        tails: list[ExitTail] = []
        spill_path = output_file(self._job_dir, number if number is not None else unit_id,
                                 attempt)  # named as users know the unit
        ctx = UnitContext(
            job_id=self.job.id, job_name=self.job.name, unit_id=unit_id, key=key, seq=seq, attempt=attempt,
            prompt=prompt, payload=payload, source_kind=str(self.job.source.get("kind")), workspace=workspace,
            allowed_dirs=[workspace], timeout=self.job.timeout_s, emit=emit, processes=processes,
            feedback=feedback, gate=self.gate, workdir=self._workdir,
            template_vars={"prompt": prompt, "unit": unit_vars, "job": {"id": self.job.id, "name": self.job.name},
                           **(extra_vars or {})},
            max_output_bytes=worker_output_cap(self.max_output_bytes), full_output_path=spill_path,
            shared_processes=self.shared_processes,
            defer_exit=tails.append if self.defer_exits and iso is None and unit_id is not None else None,
        )
        if iso is not None:
            ctx = iso.context(ctx)
        if self._prepared is not None and not self._prepared.done():
            await asyncio.wait({self._prepared})
        emit("start", {"attempt": attempt, "worker": self.worker.kind, "executor": self.executor_id})
        started = time.monotonic()
        phase[0] = f"the {self.worker.kind} worker"
        urgent = True  # a deferred exit of an attempt that did not end normally is cut short
        try:
            async with asyncio.timeout(self.job.timeout_s):  # in this task: what the worker raises lands here
                outcome = await self.worker.run(ctx)
                urgent = False
                if iso is not None:  # commit, --require-changes, --verify: inside the attempt's time
                    phase[0] = "capturing the changes and verifying"
                    outcome = await iso.finish(outcome, ctx)
        except TimeoutError:
            outcome = UnitOutcome.failure(f"timed out after {self.job.timeout_s:g}s (agent killed)",
                                          ErrorClass.retryable, FailureKind.timeout)
        except asyncio.CancelledError:
            processes.kill_all()
            raise
        except (Exception, SystemExit) as exc:  # a bug in a worker must not take the executor down
            outcome = crash_outcome(exc, phase[0])
            log.error("job %s unit %s attempt %s: %s\n%s", self.job.id, number if number is not None else unit_id,
                      attempt, outcome.error,
                      short_traceback(exc))
            emit("stderr", {"text": short_traceback(exc)})
        finally:
            if tails:
                grace = 0.0 if urgent else self.settings.exit_grace_seconds  # 10 s: as long as the SDK's close
                self._defer_exit(tails, processes, (self.job.id, unit_id, attempt), grace)
            else:
                processes.kill_all()
        if schema is not None:
            phase[0] = "validating the output against output_schema"
            outcome = structured.apply_schema(outcome, schema)
        phase[0] = "building the result"
        if len(outcome.output or "") > self.max_output_bytes // 4:  # may write a big file: not on the loop
            outcome, notes = await asyncio.to_thread(bound_outcome, outcome, self.max_output_bytes, spill_path)
        else:
            outcome, notes = bound_outcome(outcome, self.max_output_bytes, spill_path)
        for note in notes:
            emit("note", {"text": note})
            named = number if number is not None else unit_id
            self.recorder.log(self.job.id, "warning", f"unit {named} ({key}): {note}", unit_id=unit_id,
                              executor_id=self.executor_id, attempt=attempt)
        if outcome.error:
            emit("error", {"error": outcome.error, "error_class": (outcome.error_class or "retryable"),
                           "duration_s": round(time.monotonic() - started, 3)})
        else:
            emit("end", {"duration_s": round(time.monotonic() - started, 3), "cost_usd": outcome.cost_usd})
        return outcome, prompt

    def _defer_exit(self, tails: list[ExitTail], processes: UnitProcesses, attempt: tuple[int, int | None, int],
                    grace: float) -> None:
        """Run the end of an attempt's exit in the background, tracked until `settle_exits()`."""
        self._exiting_attempts.add(attempt)
        task = asyncio.create_task(self._exit_tail(tails, attempt, grace))

        def done(task: asyncio.Task[None]) -> None:  # a callback: runs even for a task cancelled unstarted
            processes.kill_all()  # nothing of the attempt outlives its exit
            self._exiting.discard(task)
            self._exiting_attempts.discard(attempt)
            self.recorder.forget(*attempt)

        task.add_done_callback(done)
        self._exiting.add(task)

    @staticmethod
    async def _exit_tail(tails: list[ExitTail], attempt: tuple[int, int | None, int], grace: float) -> None:
        try:
            for tail in tails:
                await tail(grace)
        except Exception as exc:  # the agent's exit went wrong: what is left is killed all the same
            log.warning("job %s unit %s attempt %s: ending the agent failed: %s", *attempt, exc)

    @property
    def exiting(self) -> int:
        """Agents that reported their outcome and are still exiting (their units' slots are free)."""
        return len(self._exiting)

    async def settle_exits(self, kill: bool = False) -> None:
        """Wait for every deferred exit (each bounded: its grace, then a kill); with `kill`, or when
        cancelled, end them at once (their processes are killed) and wait for that."""
        while self._exiting:
            tasks = set(self._exiting)
            if kill:
                for task in tasks:
                    task.cancel()
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError:
                for task in tasks:
                    task.cancel()
                raise

    async def run_unit(self, unit: UnitRecord) -> UnitResult:
        """Attempt a claimed unit and queue its result (fenced by lease) for writing. Never raises
        except CancelledError: a unit whose result cannot even be built fails on its own."""
        outcome, prompt = await self.attempt(
            unit_id=unit.id, key=unit.key, seq=unit.seq, attempt=unit.attempt, payload=unit.payload,
            template=self.job.prompt_template, feedback=unit.error if unit.attempt > 1 else None,
            feedback_kind=unit.error_kind if unit.attempt > 1 else None, number=unit.number)
        try:
            result = self._decide(unit, outcome, prompt)
        except Exception as exc:  # e.g. a worker's outcome with values of the wrong type
            outcome = crash_outcome(exc, "building the result")
            log.error("job %s unit %s attempt %s: %s\n%s", self.job.id, unit.number, unit.attempt, outcome.error,
                      short_traceback(exc))
            result = self._decide(unit, outcome, prompt)
        self.recorder.result(result)
        if result.status != UnitStatus.COMPLETED:
            level = "error" if result.status == UnitStatus.FAILED else "warning"
            verb = "failed" if result.status == UnitStatus.FAILED else "will retry"
            self.recorder.log(self.job.id, level, f"unit {unit.number} ({unit.key}) {verb}: {outcome.error}",
                              unit_id=unit.id, executor_id=self.executor_id, attempt=unit.attempt,
                              error_class=result.error_class)
        return result

    def _decide(self, unit: UnitRecord, outcome: UnitOutcome, prompt: str | None) -> UnitResult:
        result = decide(outcome, unit_id=unit.id, attempt=unit.attempt, error_count=unit.error_count,
                        max_retries=self.job.max_retries, prompt=prompt,
                        retry_base=self.settings.retry_base_seconds, retry_cap=self.settings.retry_max_seconds,
                        quota_wait=self.job.quota_wait_s or _default_quota_wait())
        # the pool and the store add these up: a worker's wrong type must fail this unit here, not later
        result.cost_usd = float(result.cost_usd or 0.0)
        result.tokens_in, result.tokens_out = int(result.tokens_in or 0), int(result.tokens_out or 0)
        result.turns = int(result.turns or 0)
        return result
