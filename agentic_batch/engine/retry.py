"""The one retry loop's decisions: what an attempt's outcome does to its unit."""

from __future__ import annotations

import random
import time

from agentic_batch.store import UnitResult
from agentic_batch.workers.base import ErrorClass, UnitOutcome
from agentic_batch.states import UnitStatus


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: half the step fixed, half random, so retries spread out."""
    step = min(cap, base * (2 ** max(0, failures - 1)))
    return step / 2 + (rng or random).uniform(0, step / 2)


def decide(outcome: UnitOutcome, *, unit_id: int, attempt: int, error_count: int, max_retries: int,
           prompt: str | None, retry_base: float, retry_cap: float, now: float | None = None,
           quota_wait: float | None = None) -> UnitResult:
    """Turn an attempt's outcome into the unit's next state.

    retryable: back to PENDING after a backoff (or the server's retry-after) until `max_retries`
    errors have been spent, then FAILED. quota: back to PENDING at the reset time without spending
    a retry. permanent: FAILED at once.
    """
    now = time.time() if now is None else now
    common = dict(unit_id=unit_id, attempt=attempt, prompt=prompt, output=outcome.output, data=outcome.data,
                  cost_usd=outcome.cost_usd, tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out,
                  turns=outcome.turns, session_id=outcome.session_id)
    if outcome.ok:
        return UnitResult(status=UnitStatus.COMPLETED, **common)
    error_class = outcome.error_class or ErrorClass.retryable
    failed = dict(error=outcome.error, error_class=error_class.value, **common)
    if error_class is ErrorClass.permanent:
        return UnitResult(status=UnitStatus.FAILED, count_error=True, **failed)
    if error_class is ErrorClass.quota:
        wait = outcome.retry_after if outcome.retry_after else (quota_wait if quota_wait is not None else retry_cap)
        return UnitResult(status=UnitStatus.PENDING, not_before=now + wait, **failed)
    errors = error_count + 1
    if errors > max_retries:
        return UnitResult(status=UnitStatus.FAILED, count_error=True, **failed)
    delay = backoff_delay(errors, retry_base, retry_cap)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return UnitResult(status=UnitStatus.PENDING, not_before=now + delay, count_error=True, **failed)
