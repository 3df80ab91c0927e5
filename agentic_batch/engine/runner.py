"""One attempt at one unit: render its prompt, give the worker a context, enforce the timeout,
clean up every process the attempt started, and decide what happens to the unit.

Shared by the executor's pool, the synchronous test run and the reduce step, so all three behave
the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.engine import structured
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.reaper import Reaper, UnitProcesses
from agentic_batch.engine.retry import decide
from agentic_batch.errors import AbpError
from agentic_batch.prompts import render
from agentic_batch.store import JobRecord, UnitRecord, UnitResult
from agentic_batch.workers.base import CallGate, ErrorClass, OpenGate, UnitContext, UnitOutcome, Worker

log = logging.getLogger(__name__)


def job_workspace(settings: Settings, job_id: int) -> Path:
    path = settings.job_dir(job_id) / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unit_workspace(job: JobRecord, payload: dict[str, Any], shared: Path) -> Path:
    """For a file source, the item's directory; otherwise the job's (shared) workspace."""
    if job.source.get("kind") == "files" and isinstance(payload.get("path"), str):
        return Path(payload["path"]).parent
    return shared


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
        self.gate = gate or OpenGate()
        self.executor_id = executor_id
        self._shared_workspace: Path | None = None
        self._prepared: asyncio.Future[Any] | None = None

    def start_preparing(self) -> None:
        """Run the worker's optional `prepare()` in a thread now; units wait for it before running."""
        prepare = getattr(self.worker, "prepare", None)
        if prepare is not None and self._prepared is None:
            self._prepared = asyncio.ensure_future(asyncio.to_thread(prepare))

    def render_prompt(self, template: str | None, payload: dict[str, Any], unit: dict[str, Any]) -> str | None:
        if not template:
            return None
        return render(template, payload, unit=unit, job={"id": self.job.id, "name": self.job.name})

    @property
    def shared_workspace(self) -> Path:
        if self._shared_workspace is None:
            self._shared_workspace = job_workspace(self.settings, self.job.id)
        return self._shared_workspace

    async def attempt(self, *, unit_id: int | None, key: str, seq: int, attempt: int, payload: dict[str, Any],
                      template: str | None, feedback: str | None = None,
                      extra_vars: dict[str, Any] | None = None) -> tuple[UnitOutcome, str | None]:
        """Run one attempt; never raises except CancelledError (after killing its processes)."""
        try:
            return await self._attempt(unit_id=unit_id, key=key, seq=seq, attempt=attempt, payload=payload,
                                       template=template, feedback=feedback, extra_vars=extra_vars)
        finally:
            self.recorder.forget(self.job.id, unit_id, attempt)  # the attempt's event numbering is done

    async def _attempt(self, *, unit_id: int | None, key: str, seq: int, attempt: int, payload: dict[str, Any],
                       template: str | None, feedback: str | None,
                       extra_vars: dict[str, Any] | None) -> tuple[UnitOutcome, str | None]:
        emit = self.recorder.emitter(self.job.id, unit_id, attempt)
        unit_vars = {"id": unit_id, "key": key, "seq": seq, "attempt": attempt}
        try:
            prompt = self.render_prompt(template, {**payload, **(extra_vars or {})}, unit_vars)
        except AbpError as exc:
            emit("error", {"error": exc.one_line(), "error_class": "permanent"})
            return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent), None
        schema = self.job.output_schema if unit_id is not None else None
        if schema is not None and prompt is not None:
            schema_feedback = feedback if feedback and feedback.startswith(structured.SCHEMA_ERROR) else None
            prompt += structured.instructions(schema, schema_feedback)
        workspace = unit_workspace(self.job, payload, self.shared_workspace)
        processes = UnitProcesses(self.reaper)
        ctx = UnitContext(
            job_id=self.job.id, job_name=self.job.name, unit_id=unit_id, key=key, seq=seq, attempt=attempt,
            prompt=prompt, payload=payload, source_kind=str(self.job.source.get("kind")), workspace=workspace,
            allowed_dirs=[workspace], timeout=self.job.timeout_s, emit=emit, processes=processes,
            feedback=feedback, gate=self.gate, workdir=Path(self.job.workdir),
            template_vars={"prompt": prompt, "unit": unit_vars, "job": {"id": self.job.id, "name": self.job.name},
                           **(extra_vars or {})},
        )
        if self._prepared is not None and not self._prepared.done():
            await asyncio.wait({self._prepared})
        emit("start", {"attempt": attempt, "worker": self.worker.kind, "executor": self.executor_id})
        started = time.monotonic()
        try:
            outcome = await asyncio.wait_for(self.worker.run(ctx), timeout=self.job.timeout_s)
        except TimeoutError:
            outcome = UnitOutcome.failure(f"timed out after {self.job.timeout_s:g}s (agent killed)",
                                          ErrorClass.retryable)
        except asyncio.CancelledError:
            processes.kill_all()
            raise
        except Exception as exc:  # a bug in a worker must not take the executor down
            log.debug("worker crashed", exc_info=True)
            emit("stderr", {"text": traceback.format_exc(limit=8)})
            outcome = UnitOutcome.failure(f"worker crashed: {type(exc).__name__}: {exc}", ErrorClass.retryable)
        finally:
            processes.kill_all()
        if schema is not None:
            outcome = structured.apply_schema(outcome, schema)
        if outcome.error:
            emit("error", {"error": outcome.error, "error_class": (outcome.error_class or "retryable"),
                           "duration_s": round(time.monotonic() - started, 3)})
        else:
            emit("end", {"duration_s": round(time.monotonic() - started, 3), "cost_usd": outcome.cost_usd})
        return outcome, prompt

    async def run_unit(self, unit: UnitRecord) -> UnitResult:
        """Attempt a claimed unit and queue its result (fenced by lease) for writing."""
        outcome, prompt = await self.attempt(
            unit_id=unit.id, key=unit.key, seq=unit.seq, attempt=unit.attempt, payload=unit.payload,
            template=self.job.prompt_template, feedback=unit.error if unit.attempt > 1 else None)
        result = decide(outcome, unit_id=unit.id, attempt=unit.attempt, error_count=unit.error_count,
                        max_retries=self.job.max_retries, prompt=prompt,
                        retry_base=self.settings.retry_base_seconds, retry_cap=self.settings.retry_max_seconds,
                        quota_wait=self.job.quota_wait_s or 900.0)
        self.recorder.result(result)
        if result.status != "COMPLETED":
            level = "error" if result.status == "FAILED" else "warning"
            verb = "failed" if result.status == "FAILED" else "will retry"
            self.recorder.log(self.job.id, level, f"unit {unit.id} ({unit.key}) {verb}: {outcome.error}",
                              unit_id=unit.id, executor_id=self.executor_id, attempt=unit.attempt,
                              error_class=result.error_class)
        return result
