"""The Anthropic batch provider against the scripted Message Batches server, through the real SDK."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
import pytest_asyncio

from agentic_batch.batchapi.anthropic_batch import CREATE_WINDOW_FACTOR, AnthropicBatchProvider, build, tag_digest
from agentic_batch.batchapi.provider import (
    AdoptionPending,
    BatchRequest,
    BatchResult,
    BatchState,
    Disposition,
    make_custom_id,
)
from agentic_batch.errors import InvalidSpec
from agentic_batch.testing.anthropic_server import BatchTiming, MessagesRequest, Reply, ScriptedAnthropicServer
from agentic_batch.workers.anthropic_messages import AnthropicOptions
from agentic_batch.workers.base import ErrorClass, FailureKind
from agentic_batch.workers.tool_loop import ModelCallError, sdk_error

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ABP_BATCH_CREATE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer() as srv:
        srv.batches.default = BatchTiming(seconds=0.2)
        yield srv


@pytest_asyncio.fixture
async def provider(server: ScriptedAnthropicServer) -> AsyncIterator[AnthropicBatchProvider]:
    p = AnthropicBatchProvider(AnthropicOptions(model="claude-sonnet-4-6", base_url=server.url),
                               create_timeout=WINDOW, clock_skew=0.0)
    yield p
    await p.aclose()


WINDOW = 1.0


def closed_intent() -> float:
    """An intent row written long enough ago that a create sent for it can no longer land."""
    return time.time() - WINDOW * CREATE_WINDOW_FACTOR - 0.1


def unit_requests(p: AnthropicBatchProvider, n: int, first: int = 1) -> list[BatchRequest]:
    return [BatchRequest(make_custom_id(i, 1), p.request_body(system=None, prompt=f"item {i}", output_schema=None))
            for i in range(first, first + n)]


async def wait_ended(p: AnthropicBatchProvider, batch_id: str) -> None:
    deadline = time.monotonic() + 90  # generous: two shared cores under other suites' load
    while not (await p.status(batch_id)).state.finished:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def collect(p: AnthropicBatchProvider, batch_id: str) -> dict[str, BatchResult]:
    return {r.custom_id: r async for r in p.results(batch_id)}


async def test_request_body_from_the_worker_options() -> None:
    p = build(AnthropicOptions(model="claude-haiku-4-5", base_url="http://127.0.0.1:9", max_tokens=300,
                               temperature=1.5, system_prompt="Be terse."))
    assert p.request_body(system=None, prompt="hi", output_schema=None) == {
        "model": "claude-haiku-4-5", "max_tokens": 300, "system": "Be terse.", "temperature": 1.0,
        "messages": [{"role": "user", "content": "hi"}]}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = p.request_body(system="Count.", prompt="how many? (JSON please)", output_schema=schema)
    assert body["system"] == "Count."  # the loop has put the schema's instructions in the prompt, as online
    assert body["messages"] == [{"role": "user", "content": "how many? (JSON please)"}]


async def test_a_missing_key_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidSpec, match="ANTHROPIC_API_KEY"):
        build(AnthropicOptions(model="claude-haiku-4-5", base_url="https://api.anthropic.com"))


async def test_submit_poll_and_read_results(server: ScriptedAnthropicServer, provider: AnthropicBatchProvider) -> None:
    server.responder = lambda req: Reply.text(f"answer to {req.first_user_text}", usage=(120, 30))
    batch_id = await provider.submit(unit_requests(provider, 3), tag="job7-batch1")
    status = await provider.status(batch_id)
    assert status.state is BatchState.in_progress and status.provider_status == "in_progress"
    assert status.counts == {"processing": 3, "succeeded": 0, "errored": 0, "cancelled": 0, "expired": 0,
                             "total": 3}
    assert status.created_at == pytest.approx(time.time(), abs=5)
    # On the wire each custom_id carries the tag's digest; the engine never sees it.
    digest = tag_digest("job7-batch1")
    assert set(server.batches.submitted()) == {f"u{i}-a1_{digest}" for i in (1, 2, 3)}
    await wait_ended(provider, batch_id)
    status = await provider.status(batch_id)
    assert status.state is BatchState.ended and status.counts["succeeded"] == 3 and status.counts["processing"] == 0
    results = await collect(provider, batch_id)
    assert set(results) == {"u1-a1", "u2-a1", "u3-a1"}
    first = results["u1-a1"]
    assert first.disposition is Disposition.succeeded and first.text == "answer to item 1"
    assert (first.input_tokens, first.output_tokens) == (120, 30)
    assert first.raw is not None and first.raw["usage"]["input_tokens"] == 120


@pytest.mark.parametrize(("reply", "error_class", "kind"), [
    (Reply.error(400, message="prompt is too long"), ErrorClass.permanent, FailureKind.bad_request),
    (Reply.error(401), ErrorClass.permanent, FailureKind.auth),
    (Reply.error(429), ErrorClass.retryable, FailureKind.rate_limited),
    (Reply.error(500), ErrorClass.retryable, FailureKind.server_error),
    (Reply.error(529), ErrorClass.retryable, FailureKind.overloaded),
    (Reply.error(429, message="usage limit reached, resets in 5 minutes"), ErrorClass.quota, FailureKind.quota),
    (Reply.error(400, "billing_error", "Your credit balance is too low"), ErrorClass.permanent, FailureKind.spend_cap),
])
async def test_errored_requests_are_classified_as_online(server: ScriptedAnthropicServer,
                                                         provider: AnthropicBatchProvider, reply: Reply,
                                                         error_class: ErrorClass, kind: FailureKind) -> None:
    """The same scripted error, online through `messages.create` and in a batch: same class, same kind."""
    server.responder = lambda req: reply if "item 1" in req.first_user_text else Reply.text("ok")
    try:
        await provider.client().messages.create(**provider.request_body(system=None, prompt="item 1",
                                                                         output_schema=None))
    except anthropic.APIStatusError as exc:
        online = sdk_error(exc, anthropic, anthropic.AnthropicError)  # what the online worker does
    assert online is not None and (online.error_class, online.kind) == (error_class, kind)

    batch_id = await provider.submit(unit_requests(provider, 2), tag="t")
    await wait_ended(provider, batch_id)
    results = await collect(provider, batch_id)
    assert results["u2-a1"].disposition is Disposition.succeeded
    errored = results["u1-a1"]
    assert errored.disposition is Disposition.errored
    assert (errored.error_class, errored.error_kind) == (error_class, kind)
    assert errored.error is not None and reply.message in errored.error


async def test_expired_and_cancelled_requests(server: ScriptedAnthropicServer,
                                              provider: AnthropicBatchProvider) -> None:
    server.batches.planned.append(BatchTiming(seconds=2.0, expire_after=1.0))
    expiring = await provider.submit(unit_requests(provider, 4), tag="a")
    await wait_ended(provider, expiring)
    assert (await provider.status(expiring)).counts["expired"] == 2
    by = {r.custom_id: r.disposition for r in (await collect(provider, expiring)).values()}
    assert by == {"u1-a1": Disposition.succeeded, "u2-a1": Disposition.succeeded,
                  "u3-a1": Disposition.expired, "u4-a1": Disposition.expired}

    server.batches.planned.append(BatchTiming(seconds=math.inf, cancel_seconds=0.2))
    stuck = await provider.submit(unit_requests(provider, 2, first=5), tag="b")
    await asyncio.sleep(0.3)
    assert (await provider.status(stuck)).state is BatchState.in_progress
    await provider.cancel(stuck)
    assert (await provider.status(stuck)).state is BatchState.cancelling
    await wait_ended(provider, stuck)
    assert {r.disposition for r in (await collect(provider, stuck)).values()} == {Disposition.cancelled}
    assert (await provider.status(stuck)).counts["cancelled"] == 2
    await provider.cancel(stuck)  # ended: a no-op, not an error


async def test_429_on_create_is_retryable_and_creates_nothing(server: ScriptedAnthropicServer,
                                                              provider: AnthropicBatchProvider) -> None:
    server.batches.create_errors.append(Reply.error(429, headers={"retry-after": "3"}))
    with pytest.raises(ModelCallError) as caught:
        await provider.submit(unit_requests(provider, 2), tag="t")
    error = caught.value
    assert (error.error_class, error.kind, error.retry_after) == (ErrorClass.retryable, FailureKind.rate_limited, 3.0)
    assert server.batches.all() == []
    assert await provider.find("t", created_after=closed_intent(), count=2) == []


async def test_bad_packing_is_refused_before_any_request(server: ScriptedAnthropicServer,
                                                         provider: AnthropicBatchProvider) -> None:
    with pytest.raises(ValueError, match="1 to 100000"):
        await provider.submit([], tag="t")
    with pytest.raises(ValueError, match="too long"):
        await provider.submit([BatchRequest("x" * 60, {})], tag="t")
    assert server.count(None) == 0


# --- adoption ---------------------------------------------------------------------------------

async def test_a_batch_whose_create_was_never_answered_is_adopted_once_it_ends(
        server: ScriptedAnthropicServer, provider: AnthropicBatchProvider) -> None:
    intent_at = time.time()
    server.batches.hold_create = 30.0
    server.batches.planned.append(BatchTiming(seconds=2.0))
    provider.create_timeout = 0.5
    with pytest.raises(ModelCallError) as caught:
        await provider.submit(unit_requests(provider, 3), tag="job1-b1")
    assert caught.value.kind is FailureKind.timeout
    (made,) = server.batches.all()
    with pytest.raises(AdoptionPending):  # still running: cannot be told apart yet
        await provider.find("job1-b1", created_after=intent_at, count=3)
    await wait_ended(provider, made.id)
    assert await provider.find("job1-b1", created_after=intent_at, count=3) == [made.id]
    assert len(server.batches.all()) == 1


async def test_someone_elses_batches_are_never_adopted(server: ScriptedAnthropicServer,
                                                       provider: AnthropicBatchProvider) -> None:
    intent_at = closed_intent()
    foreign = await provider.submit(unit_requests(provider, 3), tag="another-job")
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as other:  # not ours at all
        plain = other.messages.batches.create(requests=[  # type: ignore[arg-type]
            {"custom_id": f"u{i}-a1", "params": provider.request_body(system=None, prompt="x", output_schema=None)}
            for i in range(3)]).id
    await wait_ended(provider, foreign)
    await wait_ended(provider, plain)
    assert await provider.find("job1-b1", created_after=intent_at, count=3) == []
    ours = await provider.submit(unit_requests(provider, 3), tag="job1-b1")
    await wait_ended(provider, ours)
    assert await provider.find("job1-b1", created_after=intent_at, count=3) == [ours]


async def test_a_running_foreign_batch_of_another_size_does_not_hold_adoption_up(
        server: ScriptedAnthropicServer, provider: AnthropicBatchProvider) -> None:
    server.batches.default = BatchTiming(seconds=math.inf)
    intent_at = closed_intent()
    await provider.submit(unit_requests(provider, 5), tag="other")
    assert await provider.find("mine", created_after=intent_at, count=3) == []
    with pytest.raises(AdoptionPending, match="may hold these units"):  # same size: could be ours
        await provider.find("mine", created_after=intent_at, count=5)
    results_reads = [r for r in server.requests if r.route.endswith("/results")]
    assert results_reads == []


async def test_no_answer_while_a_create_could_still_land(server: ScriptedAnthropicServer,
                                                         provider: AnthropicBatchProvider) -> None:
    provider.create_timeout = 30.0  # the window: 37.5 s from the intent row
    with pytest.raises(AdoptionPending) as caught:
        await provider.find("mine", created_after=time.time(), count=3)
    assert 35 < caught.value.retry_after <= 37.5
    assert await provider.find("mine", created_after=time.time() - 38, count=3) == []


async def test_batches_created_before_the_intent_are_not_looked_at(server: ScriptedAnthropicServer,
                                                                   provider: AnthropicBatchProvider) -> None:
    old = await provider.submit(unit_requests(provider, 3), tag="mine")
    await wait_ended(provider, old)
    server.batches.all()[0].created_at -= 3600  # made an hour before the intent row
    assert await provider.find("mine", created_after=closed_intent(), count=3) == []


async def test_find_pages_through_many_batches(server: ScriptedAnthropicServer,
                                               provider: AnthropicBatchProvider) -> None:
    provider.create_timeout = 30.0  # 111 creates: the fixture's 1 s window is for the window tests (CI, loaded)
    intent_at = closed_intent()
    ours = await provider.submit(unit_requests(provider, 2), tag="mine")
    for n in range(110):  # more than one page of 100
        await provider.submit(unit_requests(provider, 1, first=n + 10), tag=f"other{n}")
    await wait_ended(provider, ours)
    assert await provider.find("mine", created_after=intent_at, count=2) == [ours]


async def test_results_are_streamed(server: ScriptedAnthropicServer, provider: AnthropicBatchProvider) -> None:
    seen: list[str] = []

    def responder(req: MessagesRequest) -> Reply:
        return Reply.text("x" * 200)

    server.responder = responder
    batch_id = await provider.submit(unit_requests(provider, 2000), tag="big")
    await wait_ended(provider, batch_id)
    stream: Any = provider.results(batch_id)
    async for result in stream:
        seen.append(result.custom_id)
        if len(seen) == 10:
            break
    await stream.aclose()  # the HTTP stream is closed with the iterator
    async for result in provider.results(batch_id):
        seen.append(result.custom_id)
    assert len(seen) == 2010 and len(set(seen)) == 2000


async def test_sdk_failures_come_back_classified(server: ScriptedAnthropicServer,
                                                 provider: AnthropicBatchProvider) -> None:
    with pytest.raises(ModelCallError) as caught:
        await provider.status("msgbatch_nope")
    assert (caught.value.error_class, caught.value.kind) == (ErrorClass.permanent, FailureKind.bad_request)
    with pytest.raises(ModelCallError):
        async for _ in provider.results("msgbatch_nope"):
            pass
    nobody = build(AnthropicOptions(model="claude-haiku-4-5", base_url="http://127.0.0.1:9"))  # discard port
    with pytest.raises(ModelCallError) as caught:
        await nobody.cancel("msgbatch_nope")
    await nobody.aclose()
    assert (caught.value.error_class, caught.value.kind) == (ErrorClass.retryable, FailureKind.connection)
