"""The one retry loop's decisions: what an attempt's outcome does to its unit (and to the reduce step,
which retries by the same rules)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from agentic_batch.store import UnitResult
from agentic_batch.workers.base import ErrorClass, UnitOutcome
from agentic_batch.states import UnitStatus


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: half the step fixed, half random, so retries spread out."""
    step = min(cap, base * 2.0 ** max(0, failures - 1))
    return step / 2 + (rng or random).uniform(0, step / 2)


@dataclass(frozen=True)
class RetryDecision:
    """What happens after one attempt: COMPLETED, FAILED, or PENDING (try again at `not_before`)."""

    status: UnitStatus
    #: PENDING: not before this time (a backoff, the server's retry-after, or a quota's reset).
    not_before: float | None = None
    #: The attempt spent one of the unit's retries (quota waits do not).
    count_error: bool = False

    @property
    def retry(self) -> bool:
        return self.status is UnitStatus.PENDING


def next_step(outcome: UnitOutcome, *, error_count: int, max_retries: int, retry_base: float, retry_cap: float,
              now: float | None = None, quota_wait: float | None = None) -> RetryDecision:
    """The retry rules.

    retryable: back to PENDING after a backoff (or the server's retry-after) until `max_retries`
    errors have been spent, then FAILED. quota: back to PENDING at the reset time without spending
    a retry. permanent: FAILED at once.
    """
    if outcome.ok:
        return RetryDecision(UnitStatus.COMPLETED)
    now = time.time() if now is None else now
    error_class = outcome.error_class or ErrorClass.retryable
    if error_class is ErrorClass.permanent:
        return RetryDecision(UnitStatus.FAILED, count_error=True)
    if error_class is ErrorClass.quota:
        wait = outcome.retry_after if outcome.retry_after else (quota_wait if quota_wait is not None else retry_cap)
        return RetryDecision(UnitStatus.PENDING, not_before=now + wait)
    errors = error_count + 1
    if errors > max_retries:
        return RetryDecision(UnitStatus.FAILED, count_error=True)
    delay = backoff_delay(errors, retry_base, retry_cap)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return RetryDecision(UnitStatus.PENDING, not_before=now + delay, count_error=True)


def decide(outcome: UnitOutcome, *, unit_id: int, attempt: int, error_count: int, max_retries: int,
           prompt: str | None, retry_base: float, retry_cap: float, now: float | None = None,
           quota_wait: float | None = None) -> UnitResult:
    """Turn an attempt's outcome into the unit's next state (`next_step`), as the result to write."""
    step = next_step(outcome, error_count=error_count, max_retries=max_retries, retry_base=retry_base,
                     retry_cap=retry_cap, now=now, quota_wait=quota_wait)
    result = UnitResult(unit_id=unit_id, attempt=attempt, prompt=prompt, status=step.status, not_before=step.not_before,
                        count_error=step.count_error, **outcome.attempt_fields())
    # a success has no error class; a failure without one is retryable
    result.error_class = None if outcome.ok else ErrorClass(outcome.error_class or ErrorClass.retryable).value
    return result
