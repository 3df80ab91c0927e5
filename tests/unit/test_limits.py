"""Rate windows, adaptive concurrency, budget arithmetic and structured-output parsing."""

from __future__ import annotations

import asyncio

import pytest

from agentic_batch.engine.limits import AdaptiveLimit, Budget, RateGate
from agentic_batch.engine.structured import apply_schema, extract_json, instructions
from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, UnitOutcome


class FakeClock:
    """Time for RateGate, advanced by the gate's own sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_calls(gate: RateGate, clock: FakeClock, calls: int, tokens: int = 0) -> list[float]:
    started: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    async def main() -> None:
        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(calls):
                await gate.before_call(tokens)
                started.append(clock.now)
                gate.after_call(tokens)
        finally:
            asyncio.sleep = real_sleep  # type: ignore[assignment]

    asyncio.run(main())
    return started


def test_rpm_allows_a_minute_of_calls_then_waits_for_the_window() -> None:
    clock = FakeClock()
    times = run_calls(RateGate(rpm=10, tpm=None, clock=clock), clock, 25)
    assert times[:10] == [0.0] * 10
    # a slot frees a little after 60 s (WINDOW_MARGIN_S): our stamps precede the provider's
    assert 60.0 <= times[10] < 62.1 and 120.0 <= times[20] < 124.2
    for i in range(10, 25):  # never more than 10 calls in any 60 s window
        assert times[i] - times[i - 10] >= 60.0


def test_tpm_limits_tokens_per_window() -> None:
    clock = FakeClock()
    times = run_calls(RateGate(rpm=None, tpm=1000, clock=clock), clock, 6, tokens=400)
    assert times[:2] == [0.0, 0.0] and times[2] >= 60.0 and times[4] >= 120.0


def test_adaptive_limit_halves_on_a_burst_and_grows_back() -> None:
    limit = AdaptiveLimit(40, burst=3, window=10, grow_every=5)
    assert not limit.rate_limited(now=0) and not limit.rate_limited(now=1)
    assert limit.rate_limited(now=2) and limit.current == 20
    for _ in range(10):  # errors of requests sent before the halving: one burst halves once
        limit.rate_limited(now=3)
    assert limit.current == 20
    for t in (13, 13.5, 14):  # a new burst after the cool-down halves again
        limit.rate_limited(now=t)
    assert limit.current == 10
    assert limit.value(now=15) == 10
    assert limit.value(now=30) == 14 and limit.value(now=36) == 18  # grows a tenth of the ceiling per step


def test_budget_stops_claims_before_overspending() -> None:
    budget = Budget(limit=1.0, spent=0.0, finished=0)
    assert budget.how_many(0, 8) == 8  # no cost known yet
    budget.record(0.2, finished=True)
    assert budget.how_many(2, 8) == 2  # 0.2 spent + 2 in flight at 0.2 -> room for 2 more
    for _ in range(4):
        budget.record(0.2, finished=True)
    assert budget.how_many(0, 8) == 0 and budget.exhausted
    assert Budget(limit=None, spent=5, finished=1).how_many(3, 4) == 4


SCHEMA = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["spam", "ham"]}}}


def test_json_is_found_in_fences_and_prose() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure!\n```json\n{"a": 2}\n```\nbye') == {"a": 2}
    assert extract_json('The answer is {"a": 3}.') == {"a": 3}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_schema_validation_turns_bad_output_into_a_retryable_error() -> None:
    good = apply_schema(UnitOutcome(output='{"label": "spam"}'), SCHEMA)
    assert good.ok and good.data == {"label": "spam"}
    bad = apply_schema(UnitOutcome(output='{"label": "eggs"}'), SCHEMA)
    assert bad.error_class is ErrorClass.retryable and "label" in bad.error and "eggs" in bad.error
    assert "previous answer was rejected: boom" in instructions(SCHEMA, "boom")


def test_an_invalid_schema_is_refused_at_create_time() -> None:
    from agentic_batch.engine.structured import check_schema

    with pytest.raises(InvalidSpec, match="not a valid JSON Schema"):
        check_schema({"type": "nonsense"})
