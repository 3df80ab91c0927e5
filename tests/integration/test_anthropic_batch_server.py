"""The scripted Message Batches endpoints, through the real `anthropic` SDK (sync and async clients)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from agentic_batch.testing.anthropic_server import BatchTiming, MessagesRequest, Reply, ScriptedAnthropicServer


@pytest.fixture
def server() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer() as srv:
        yield srv


@pytest.fixture
def client(server: ScriptedAnthropicServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as c:
        yield c


def requests(n: int, prefix: str = "r", **params: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}",
             "params": {"model": "claude-sonnet-4-6", "max_tokens": 64,
                        "messages": [{"role": "user", "content": f"item {i}"}], **params}}
            for i in range(n)]


def wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.processing_status}"
        time.sleep(0.05)


def test_a_batch_runs_each_request_through_the_responder(server: ScriptedAnthropicServer,
                                                          client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    assert created.id.startswith("msgbatch_") and created.processing_status == "in_progress"
    assert created.request_counts.processing == 3 and created.request_counts.succeeded == 0
    assert created.results_url is None and created.ended_at is None
    assert (created.expires_at - created.created_at).total_seconds() == pytest.approx(24 * 3600)

    ended = wait_ended(client, created.id)
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 3, 0, 0, 0)
    assert ended.results_url == f"{server.url}/v1/messages/batches/{created.id}/results"
    assert ended.ended_at is not None
    texts = {r.custom_id: r.result.message.content[0].text  # type: ignore[union-attr]
             for r in client.messages.batches.results(created.id)}
    assert texts == {"r0": "DONE: item 0", "r1": "DONE: item 1", "r2": "DONE: item 2"}
    assert server.batches.submitted() == {"r0": 1, "r1": 1, "r2": 1}
    assert server.count("/v1/messages") == 0  # a batch is not an online call


def test_partial_failure_gives_errored_results_with_the_error_object(server: ScriptedAnthropicServer,
                                                                     client: anthropic.Anthropic) -> None:
    def responder(req: MessagesRequest) -> Reply:
        if "item 1" in req.first_user_text:
            return Reply.error(400, message="prompt is too long")
        if "item 2" in req.first_user_text:
            return Reply.error(529)
        return Reply.text("fine", usage=(100, 20))

    server.responder = responder
    batch = client.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    counts = wait_ended(client, batch.id).request_counts
    assert (counts.succeeded, counts.errored) == (1, 2)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["r0"].type == "succeeded" and results["r0"].message.usage.input_tokens == 100
    errored = results["r1"]
    assert errored.type == "errored"
    assert errored.error.type == "error"
    assert errored.error.error.type == "invalid_request_error"
    assert errored.error.error.message == "prompt is too long"
    assert results["r2"].error.error.type == "overloaded_error"  # type: ignore[union-attr]


def test_a_request_missing_a_required_param_errors_alone(server: ScriptedAnthropicServer,
                                                        client: anthropic.Anthropic) -> None:
    reqs = requests(2)
    del reqs[1]["params"]["max_tokens"]
    batch = client.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    wait_ended(client, batch.id)
    results = {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}
    assert results == {"r0": "succeeded", "r1": "errored"}


def test_a_script_sequence_answers_each_submission_in_turn(server: ScriptedAnthropicServer,
                                                           client: anthropic.Anthropic) -> None:
    """A unit's request that errored in one batch can succeed in the next (the retry path)."""
    server.responder = lambda req: [Reply.error(500), Reply.text("second time")]
    first = client.messages.batches.create(requests=requests(1, "a"))  # type: ignore[arg-type]
    wait_ended(client, first.id)
    assert [r.result.type for r in client.messages.batches.results(first.id)] == ["errored"]
    second = client.messages.batches.create(requests=requests(1, "b"))  # type: ignore[arg-type]
    wait_ended(client, second.id)
    assert [r.result.type for r in client.messages.batches.results(second.id)] == ["succeeded"]


def test_expiry_ends_the_batch_with_the_unfinished_requests_expired(server: ScriptedAnthropicServer,
                                                                    client: anthropic.Anthropic) -> None:
    # Requests finish at 0.5, 1.0, 1.5, 2.0 s; the batch expires at 1.0 s.
    server.batches.planned.append(BatchTiming(seconds=2.0, expire_after=1.0))
    batch = client.messages.batches.create(requests=requests(4))  # type: ignore[arg-type]
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(1.0)
    counts = wait_ended(client, batch.id).request_counts
    assert (counts.succeeded, counts.expired, counts.processing) == (2, 2, 0)
    results = {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}
    assert results == {"r0": "succeeded", "r1": "succeeded", "r2": "expired", "r3": "expired"}


def test_a_hanging_request_comes_back_expired(server: ScriptedAnthropicServer, client: anthropic.Anthropic) -> None:
    server.responder = lambda req: Reply.hang() if "item 0" in req.first_user_text else Reply.text("ok")
    batch = client.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    wait_ended(client, batch.id)
    assert {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)} == {
        "r0": "expired", "r1": "succeeded"}


def test_a_batch_can_stay_in_progress_and_has_no_results(server: ScriptedAnthropicServer,
                                                         client: anthropic.Anthropic) -> None:
    server.batches.default = BatchTiming(seconds=math.inf)
    batch = client.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    time.sleep(0.3)
    again = client.messages.batches.retrieve(batch.id)
    assert again.processing_status == "in_progress" and again.request_counts.processing == 2
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(batch.id)
    with pytest.raises(anthropic.NotFoundError):  # straight at the URL: not there yet
        client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)


def test_cancel_goes_through_canceling_and_cancels_the_unrun_requests(server: ScriptedAnthropicServer,
                                                                      client: anthropic.Anthropic) -> None:
    server.batches.default = BatchTiming(seconds=math.inf, cancel_seconds=0.3)
    batch = client.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    cancelling = client.messages.batches.cancel(batch.id)
    assert cancelling.processing_status == "canceling" and cancelling.cancel_initiated_at is not None
    assert cancelling.request_counts.processing == 3
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.canceled == 3 and ended.request_counts.processing == 0
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}
    with pytest.raises(anthropic.ConflictError):  # an ended batch cannot be cancelled
        client.messages.batches.cancel(batch.id)


def test_cancel_keeps_the_requests_that_already_ran(server: ScriptedAnthropicServer,
                                                    client: anthropic.Anthropic) -> None:
    server.batches.default = BatchTiming(seconds=1.0, cancel_seconds=0.1)  # finish at 0.25, 0.5, 0.75, 1.0 s
    batch = client.messages.batches.create(requests=requests(4))  # type: ignore[arg-type]
    time.sleep(0.6)
    client.messages.batches.cancel(batch.id)
    counts = wait_ended(client, batch.id).request_counts
    assert counts.succeeded >= 2 and counts.succeeded + counts.canceled == 4 and counts.canceled >= 1


def test_429_on_create_creates_nothing(server: ScriptedAnthropicServer, client: anthropic.Anthropic) -> None:
    server.batches.create_errors.append(Reply.error(429, headers={"retry-after": "3"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "3"
    assert server.batches.all() == []
    client.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    assert len(server.batches.all()) == 1


def test_a_held_create_makes_the_batch_but_the_client_never_hears_of_it(server: ScriptedAnthropicServer,
                                                                       client: anthropic.Anthropic) -> None:
    """The crash window between a client's create and its recording of the id."""
    server.batches.hold_create = 30.0
    server.batches.default = BatchTiming(seconds=math.inf)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.batches.create(requests=requests(2), timeout=0.5)  # type: ignore[arg-type]
    listed = client.messages.batches.list()
    assert [b.id for b in listed.data] == [b.id for b in server.batches.all()]
    assert listed.data[0].request_counts.processing == 2


@pytest.mark.parametrize(("reqs", "message"), [
    ([], "non-empty"),
    ([{"custom_id": "has space", "params": {}}], "custom_id"),
    ([{"custom_id": "x" * 65, "params": {}}], "custom_id"),
    ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "duplicate"),
])
def test_bad_creates_are_refused_whole(server: ScriptedAnthropicServer, client: anthropic.Anthropic,
                                       reqs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.batches.create(requests=reqs)  # type: ignore[arg-type]
    assert server.batches.all() == []


def test_too_many_requests_are_refused(server: ScriptedAnthropicServer, client: anthropic.Anthropic) -> None:
    server.batches.max_requests = 3
    with pytest.raises(anthropic.BadRequestError, match="at most 3"):
        client.messages.batches.create(requests=requests(4))  # type: ignore[arg-type]


def test_list_pages_newest_first_like_the_real_api(server: ScriptedAnthropicServer,
                                                   client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=requests(1)).id for _ in range(5)]  # type: ignore[arg-type]
    newest_first = ids[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert (page.has_more, page.first_id, page.last_id) == (True, newest_first[0], newest_first[1])
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-pagination
    after = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in after.data] == newest_first[4:] and after.has_more is False
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more is True
    assert [b.id for b in client.messages.batches.list(limit=1, before_id=newest_first[4])] == newest_first[3::-1]
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        client.messages.batches.list(limit=1001)


def test_delete_only_an_ended_batch(server: ScriptedAnthropicServer, client: anthropic.Anthropic) -> None:
    server.batches.planned.append(BatchTiming(seconds=math.inf))
    running = client.messages.batches.create(requests=requests(1))  # type: ignore[arg-type]
    with pytest.raises(anthropic.ConflictError):
        client.messages.batches.delete(running.id)
    done = client.messages.batches.create(requests=requests(1))  # type: ignore[arg-type]
    wait_ended(client, done.id)
    assert client.messages.batches.delete(done.id).id == done.id
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(done.id)
    assert [b.id for b in client.messages.batches.list()] == [running.id]


def test_async_client_streams_a_large_results_file(server: ScriptedAnthropicServer) -> None:
    async def go() -> tuple[int, set[str], int]:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0) as c:
            batch = await c.messages.batches.create(requests=requests(3000))  # type: ignore[arg-type]
            while (await c.messages.batches.retrieve(batch.id)).processing_status != "ended":
                await asyncio.sleep(0.05)
            seen: set[str] = set()
            lines = 0
            async for line in await c.messages.batches.results(batch.id):
                seen.add(line.custom_id)
                lines += 1
            return lines, seen, len((await c.messages.batches.list()).data)

    lines, seen, listed = asyncio.run(go())
    assert lines == 3000 and seen == {f"r{i}" for i in range(3000)} and listed == 1
