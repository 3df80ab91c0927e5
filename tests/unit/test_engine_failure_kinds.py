"""Failure kinds are data the engine acts on, in-process: a burst of `rate_limited` attempts lowers the
pool's in-flight limit (429 in an error's text does not), and a `schema_invalid` attempt's message is
fed back to the next attempt's prompt."""

from __future__ import annotations

from pathlib import Path

from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome
from tests.fixtures.inprocess import executor, run, running_job

LOWERED = "rate limited: in-flight limit lowered"


def _messages(orch, job: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [record.message for record in orch.store.logs.list_logs(job, min_level="warning")]


def _first_attempts_fail(kind: FailureKind | None):  # type: ignore[no-untyped-def]
    async def script(ctx: UnitContext) -> UnitOutcome:
        if ctx.attempt == 1:
            return UnitOutcome.failure("HTTP 429: Too Many Requests", ErrorClass.retryable, kind)
        return UnitOutcome(output="ok")

    return script


def test_a_burst_of_rate_limited_attempts_halves_the_in_flight_limit(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=8, concurrency=8)
    ex, _ = executor(orch, job, _first_attempts_fail(FailureKind.rate_limited))
    assert run(ex) == 0
    assert orch.store.jobs.get_job(job).status == "COMPLETED"
    assert any(m.startswith(f"{LOWERED} to 4") for m in _messages(orch, job))


def test_error_text_alone_is_not_read_as_a_rate_limit(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    job = running_job(orch, workdir, n=8, concurrency=8)
    ex, _ = executor(orch, job, _first_attempts_fail(None))
    assert run(ex) == 0
    assert orch.store.jobs.get_job(job).status == "COMPLETED"
    assert not any(m.startswith(LOWERED) for m in _messages(orch, job))


def test_a_schema_error_is_fed_back_to_the_next_attempt(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    job = running_job(orch, workdir, n=1, output_schema=schema, prompt="count {{ row.id }}")
    prompts: list[str] = []

    async def fix_on_feedback(ctx: UnitContext) -> UnitOutcome:
        prompts.append(ctx.prompt or "")
        return UnitOutcome(output='{"n": "three"}' if ctx.attempt == 1 else '{"n": 3}')

    ex, _ = executor(orch, job, fix_on_feedback)
    assert run(ex) == 0
    # the kind was stored with the first attempt's error and read back with the unit's next claim
    assert "previous answer was rejected" not in prompts[0]
    assert "Your previous answer was rejected: output does not match the schema: at n:" in prompts[1]
    assert orch.store.jobs.get_job(job).status == "COMPLETED"
