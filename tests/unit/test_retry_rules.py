"""The engine's retry decisions and the shared error classification."""

from __future__ import annotations

import random

import pytest

from agentic_batch.engine.retry import backoff_delay, decide
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitOutcome
from agentic_batch.workers.classify import (
    classify_message,
    classify_status,
    message_kind,
    parse_retry_after,
    quota_reset_in,
    status_kind,
)


def _decide(outcome: UnitOutcome, error_count: int = 0, max_retries: int = 2):  # type: ignore[no-untyped-def]
    return decide(outcome, unit_id=1, attempt=error_count + 1, error_count=error_count, max_retries=max_retries,
                  prompt="p", retry_base=1.0, retry_cap=60.0, now=1000.0)


def test_success_completes() -> None:
    result = _decide(UnitOutcome(output="hi", cost_usd=0.1))
    assert result.status == "COMPLETED" and result.output == "hi" and result.cost_usd == 0.1


def test_permanent_fails_at_once() -> None:
    result = _decide(UnitOutcome.failure("bad request", ErrorClass.permanent))
    assert result.status == "FAILED" and result.error_class == "permanent"


def test_retryable_backs_off_until_retries_are_spent() -> None:
    first = _decide(UnitOutcome.failure("503", ErrorClass.retryable), error_count=0)
    assert first.status == "PENDING" and first.count_error and 1000.5 <= first.not_before <= 1001.0
    last = _decide(UnitOutcome.failure("503", ErrorClass.retryable), error_count=2, max_retries=2)
    assert last.status == "FAILED"


def test_retry_after_is_honoured() -> None:
    result = _decide(UnitOutcome.failure("429", ErrorClass.retryable, retry_after=30.0))
    assert result.not_before == pytest.approx(1030.0)


def test_quota_waits_without_spending_a_retry() -> None:
    result = _decide(UnitOutcome.failure("usage limit", ErrorClass.quota, retry_after=120.0), error_count=2)
    assert result.status == "PENDING" and not result.count_error and result.not_before == pytest.approx(1120.0)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for failures in range(1, 12):
        step = min(60.0, 2.0 * 2 ** (failures - 1))
        delay = backoff_delay(failures, 2.0, 60.0, rng)
        assert step / 2 <= delay <= step
    spread = {round(backoff_delay(3, 2.0, 60.0, rng), 3) for _ in range(20)}
    assert len(spread) > 10  # jitter: retries of many units do not line up


@pytest.mark.parametrize(("status", "message", "expected"), [
    (429, "rate limited", ErrorClass.retryable),
    (529, "overloaded", ErrorClass.retryable),
    (500, "", ErrorClass.retryable),
    (503, "", ErrorClass.retryable),
    (None, "connection reset", ErrorClass.retryable),
    (400, "invalid request", ErrorClass.permanent),
    (401, "invalid x-api-key", ErrorClass.permanent),
    (403, "", ErrorClass.permanent),
    (429, "You exceeded your current quota: insufficient_quota", ErrorClass.quota),
])
def test_classify_status(status: int | None, message: str, expected: ErrorClass) -> None:
    assert classify_status(status, message) is expected


@pytest.mark.parametrize(("status", "message", "kind"), [
    (429, "Rate limit reached for gpt-4o-mini", FailureKind.rate_limited),
    (429, "You exceeded your current quota: insufficient_quota", FailureKind.quota),
    (529, "", FailureKind.overloaded),
    (503, "", FailureKind.server_error),
    (504, "", FailureKind.timeout),
    (None, "", FailureKind.connection),
    (401, "invalid x-api-key", FailureKind.auth),
    (402, "", FailureKind.spend_cap),
    (400, "Your credit balance is too low", FailureKind.spend_cap),
    (422, "", FailureKind.bad_request),
])
def test_the_failure_kind_comes_from_the_status(status: int | None, message: str, kind: FailureKind) -> None:
    assert status_kind(status, message) is kind


def test_the_kind_from_text_is_the_fallback_for_errors_without_a_status() -> None:
    assert message_kind("API Error: 429 Too Many Requests") is FailureKind.rate_limited
    assert message_kind("Overloaded") is FailureKind.overloaded
    assert message_kind("Claude AI usage limit reached|1700000600") is FailureKind.quota
    assert message_kind("Request timed out") is FailureKind.timeout
    assert message_kind("exit code 1") is None


def test_an_outcome_carries_its_kind_to_the_result() -> None:
    result = _decide(UnitOutcome.failure("HTTP 429: slow down", ErrorClass.retryable, FailureKind.rate_limited))
    assert result.error_kind == "rate_limited" and result.error_class == "retryable"


def test_quota_messages_and_reset_times() -> None:
    assert quota_reset_in("Claude AI usage limit reached|1700000600", now=1700000000) == 600
    assert quota_reset_in("usage limit reached, resets in 2 hours") == 7200
    assert quota_reset_in("usage limit reached, resets at 2030-01-01T00:00:00Z", now=1893455940) == 60
    assert quota_reset_in("a normal error") is None
    assert classify_message("Your credit balance is too low") is ErrorClass.permanent


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "4"}) == 4.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({}) is None
