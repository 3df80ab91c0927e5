"""A unit's side of a provider batch: its request going in, its result coming back.

The request is the prompt the online path would send (the rendered template, the output schema's
instructions, the previous attempt's error as feedback), without tools. The result goes through what
an online attempt's outcome goes through: output-schema validation, the output cap, the one retry
rule (`decide`), events in the unit's conversation, cost (at the batch price) and tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from agentic_batch.batchapi.provider import BatchResult, Disposition
from agentic_batch.engine import structured
from agentic_batch.engine.outcome import bound_outcome, output_file
from agentic_batch.engine.recorder import Recorder
from agentic_batch.engine.runner import UnitRunner
from agentic_batch.errors import AbpError
from agentic_batch.states import UnitStatus
from agentic_batch.store import UnitRecord, UnitResult
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitOutcome
from agentic_batch.workers.pricing import Pricing
from agentic_batch.workers.tool_loop import with_feedback

log = logging.getLogger(__name__)

#: Output tokens a request is assumed to produce when the job has no `max_tokens` and no finished unit yet.
DEFAULT_OUTPUT_TOKENS = 256


@dataclass
class Packed:
    """What one batch will carry: requests by unit, and the units that could not be sent."""

    requests: list[tuple[UnitRecord, dict[str, Any]]] = field(default_factory=list)
    bytes: int = 0
    projected_usd: float = 0.0
    #: Units past a limit (size, bytes, budget): back to PENDING untouched.
    left_over: list[int] = field(default_factory=list)
    #: Units whose prompt could not be rendered: failed, never sent.
    failed: list[tuple[UnitRecord, UnitOutcome]] = field(default_factory=list)


class BatchUnits:
    """Builds requests and applies results for one job; `runner` renders prompts as online."""

    def __init__(self, runner: UnitRunner, provider: Any, pricing: Pricing, system: str | None,
                 max_tokens: int | None) -> None:
        self.runner = runner
        self.job = runner.job
        self.provider = provider
        self.pricing = pricing
        self.system = system
        self.max_tokens = max_tokens

    def prompt(self, unit: UnitRecord) -> str:
        """The user message of this unit's attempt, as the online worker would send it."""
        unit_vars = {"id": unit.id, "key": unit.key, "seq": unit.seq, "attempt": unit.attempt}
        prompt = self.runner.render_prompt(self.job.prompt_template, unit.payload, unit_vars)
        if prompt is None:
            prompt = json.dumps(unit.payload, ensure_ascii=False, default=str)
        feedback = unit.error if unit.attempt > 1 else None
        if self.job.output_schema is not None:
            schema_feedback = feedback if unit.error_kind == FailureKind.schema_invalid else None
            prompt += structured.instructions(self.job.output_schema, schema_feedback)
        return with_feedback(prompt, feedback)

    def pack(self, units: list[UnitRecord], *, max_bytes: int, budget_room: float | None,
             output_tokens: int) -> Packed:
        """Requests for `units` within the provider's bytes and the budget's room (None: no budget)."""
        packed = Packed()
        for unit in units:
            if packed.left_over:
                packed.left_over.append(unit.id)
                continue
            try:
                body = self.provider.request_body(system=self.system, prompt=self.prompt(unit),
                                                  output_schema=self.job.output_schema)
            except AbpError as exc:
                packed.failed.append((unit, UnitOutcome.failure(exc.one_line(), ErrorClass.permanent,
                                                                FailureKind.prompt)))
                continue
            size = len(json.dumps(body, ensure_ascii=False).encode()) + 120  # + custom_id, method, url
            cost = self.pricing.batch_cost(size // 4, self.max_tokens or output_tokens)
            over_budget = budget_room is not None and packed.requests and packed.projected_usd + cost > budget_room
            if packed.bytes + size > max_bytes or over_budget:
                packed.left_over.append(unit.id)
                continue
            packed.requests.append((unit, body))
            packed.bytes += size
            packed.projected_usd += cost
        return packed

    def outcome(self, result: BatchResult) -> UnitOutcome:
        if result.disposition is Disposition.succeeded:
            return UnitOutcome(output=result.text or "", tokens_in=result.input_tokens,
                               tokens_out=result.output_tokens, turns=1,
                               cost_usd=self.pricing.batch_cost(result.input_tokens, result.output_tokens))
        outcome = UnitOutcome.failure(result.error or "the request failed", result.error_class or ErrorClass.retryable,
                                      result.error_kind)
        outcome.tokens_in, outcome.tokens_out = result.input_tokens, result.output_tokens
        return outcome

    async def result(self, unit: UnitRecord, outcome: UnitOutcome, recorder: Recorder, *, batch_id: int,
                     provider_id: str | None) -> UnitResult:
        """The unit's result from its batch outcome, with its events and log line queued on `recorder`."""
        job = self.job
        emit = recorder.emitter(job.id, unit.id, unit.attempt)
        emit("start", {"attempt": unit.attempt, "worker": job.worker, "batch": batch_id, "provider_id": provider_id})
        if outcome.tokens_in or outcome.tokens_out:
            emit("usage", {"model": self.pricing.model, "turn": 1, "tokens_in": outcome.tokens_in,
                           "tokens_out": outcome.tokens_out, "cost": outcome.cost_usd, "batch": True})
        if outcome.ok:
            emit("assistant", {"text": outcome.output})
        if job.output_schema is not None:
            outcome = structured.apply_schema(outcome, job.output_schema)
        spill = output_file(self.runner.settings.job_dir(job.id), unit.number, unit.attempt)
        cap = self.runner.max_output_bytes
        if len(outcome.output or "") > cap // 4:  # may write a big file: not on the loop
            outcome, notes = await asyncio.to_thread(bound_outcome, outcome, cap, spill)
        else:
            outcome, notes = bound_outcome(outcome, cap, spill)
        for note in notes:
            emit("note", {"text": note})
        if outcome.error:
            emit("error", {"error": outcome.error, "error_class": outcome.error_class or "retryable"})
        else:
            emit("end", {"cost_usd": outcome.cost_usd, "batch": True})
        recorder.forget(job.id, unit.id, unit.attempt)
        prompt = self.prompt(unit)
        decided: UnitResult = self.runner._decide(unit, outcome, prompt)
        if decided.status != UnitStatus.COMPLETED:
            failed = decided.status == UnitStatus.FAILED
            recorder.log(job.id, "error" if failed else "warning",
                         f"unit {unit.number} ({unit.key}) {'failed' if failed else 'will retry'}: {outcome.error}",
                         unit_id=unit.id, attempt=unit.attempt, error_class=decided.error_class)
        return decided
