"""The OpenAI batch provider: the real `openai` SDK against the scripted Files + Batches server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentic_batch.batchapi.openai_batch import CLOCK_SLACK, OpenAIBatchProvider
from agentic_batch.batchapi.provider import BatchRequest, BatchResult, BatchState, Disposition, make_custom_id
from agentic_batch.batchapi.registry import build_provider
from agentic_batch.testing.openai_batches import ScriptedOpenAIBatchServer
from agentic_batch.testing.openai_server import Reply, Request
from agentic_batch.workers.base import ErrorClass, FailureKind
from agentic_batch.workers.tool_loop import ModelCallError


def provider_for(server: ScriptedOpenAIBatchServer, **options: Any) -> OpenAIBatchProvider:
    built = build_provider("openai", {"model": "gpt-4o-mini", "base_url": server.url, **options})
    assert isinstance(built, OpenAIBatchProvider)
    return built


def requests(provider: OpenAIBatchProvider, n: int, schema: dict[str, Any] | None = None) -> list[BatchRequest]:
    system = provider.options.system_prompt
    return [BatchRequest(make_custom_id(i + 1, 1),
                         provider.request_body(system=system, prompt=f"item {i + 1}", output_schema=schema))
            for i in range(n)]


async def until_finished(provider: OpenAIBatchProvider, batch_id: str) -> BatchState:
    for _ in range(200):
        status = await provider.status(batch_id)
        if status.state.finished:
            return status.state
        await asyncio.sleep(0.05)
    raise AssertionError("batch never finished")


async def collect(results: AsyncIterator[BatchResult]) -> dict[str, BatchResult]:
    return {r.custom_id: r async for r in results}


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def test_submit_poll_and_read_results_with_a_partial_failure() -> None:
    def responder(request: Request) -> Reply:
        if request.first_user_text == "item 2":
            return Reply.error(400, "content policy", code="invalid_prompt")
        if request.first_user_text == "item 3":
            return Reply.error(500, "boom")
        return Reply.text("answer to " + request.first_user_text, usage=(10, 5))

    with ScriptedOpenAIBatchServer(responder) as server:
        provider = provider_for(server, system_prompt="be brief", max_tokens=50)

        async def go() -> None:
            batch_id = await provider.submit(requests(provider, 4), tag="abp-j1-b1")
            assert (await provider.status(batch_id)).state is BatchState.validating
            assert await until_finished(provider, batch_id) is BatchState.ended
            status = await provider.status(batch_id)
            assert status.counts["succeeded"] == 2 and status.counts["errored"] == 2
            assert status.provider_status == "completed"
            got = await collect(provider.results(batch_id))
            await provider.aclose()
            assert got["u1-a1"].disposition is Disposition.succeeded and got["u1-a1"].text == "answer to item 1"
            assert (got["u1-a1"].input_tokens, got["u1-a1"].output_tokens) == (10, 5)
            assert got["u2-a1"].disposition is Disposition.errored
            assert (got["u2-a1"].error_class, got["u2-a1"].error_kind) == (ErrorClass.permanent,
                                                                           FailureKind.bad_request)
            assert (got["u3-a1"].error_class, got["u3-a1"].error_kind) == (ErrorClass.retryable,
                                                                           FailureKind.server_error)

        run(go)
        body = server.requests[0].body
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        assert body["max_tokens"] == 50
        assert server.creates[0].metadata == {"abp_tag": "abp-j1-b1"}
        assert server.creates[0].endpoint == "/v1/chat/completions"


def test_output_schema_is_sent_as_json_schema_response_format() -> None:
    with ScriptedOpenAIBatchServer() as server:
        provider = provider_for(server)
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

        async def go() -> None:
            batch_id = await provider.submit(requests(provider, 1, schema), tag="t")
            await until_finished(provider, batch_id)
            await collect(provider.results(batch_id))
            await provider.aclose()

        run(go)
        assert server.requests[0].body["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "unit_output", "schema": schema, "strict": False}}


def test_find_pages_through_the_list_by_tag_and_creation_time() -> None:
    with ScriptedOpenAIBatchServer(stuck=True) as server:
        provider = provider_for(server)

        async def go() -> None:
            before = time.time() - 1
            wanted = await provider.submit(requests(provider, 1), tag="abp-j7-b3")
            for i in range(150):  # more than one page of 100, all newer than the wanted one
                await provider.submit(requests(provider, 1), tag=f"other-{i}")
            assert await provider.find("abp-j7-b3", created_after=before) == [wanted]
            # the provider allows CLOCK_SLACK for clocks that differ, no more
            assert await provider.find("abp-j7-b3", created_after=time.time() + CLOCK_SLACK + 5) == []
            assert await provider.find("abp-j7-b4", created_after=before) == []
            await provider.aclose()

        run(go)


def test_expired_batch_reports_unrun_requests_as_expired() -> None:
    with ScriptedOpenAIBatchServer(expire=True, expire_completes=1) as server:
        provider = provider_for(server)

        async def go() -> None:
            batch_id = await provider.submit(requests(provider, 3), tag="t")
            assert await until_finished(provider, batch_id) is BatchState.ended
            assert (await provider.status(batch_id)).provider_status == "expired"
            got = await collect(provider.results(batch_id))
            await provider.aclose()
            assert got["u1-a1"].disposition is Disposition.succeeded
            assert {got[c].disposition for c in ("u2-a1", "u3-a1")} == {Disposition.expired}

        run(go)


def test_cancel_a_batch_that_stays_in_progress() -> None:
    with ScriptedOpenAIBatchServer(stuck=True) as server:
        provider = provider_for(server)

        async def go() -> None:
            batch_id = await provider.submit(requests(provider, 2), tag="t")
            await asyncio.sleep(0.3)
            assert (await provider.status(batch_id)).state is BatchState.in_progress
            await provider.cancel(batch_id)
            assert (await provider.status(batch_id)).state is BatchState.cancelling
            assert await until_finished(provider, batch_id) is BatchState.ended
            assert await collect(provider.results(batch_id)) == {}  # nothing ran
            await provider.cancel(batch_id)  # cancelling a finished batch again is harmless
            await provider.aclose()

        run(go)
        assert server.cancels


def test_429_on_create_is_a_classified_rate_limit() -> None:
    with ScriptedOpenAIBatchServer(create_429=1) as server:
        provider = provider_for(server)

        async def go() -> None:
            with pytest.raises(ModelCallError) as caught:
                await provider.submit(requests(provider, 1), tag="t")
            assert caught.value.error_class is ErrorClass.retryable
            assert caught.value.kind is FailureKind.rate_limited
            assert await provider.submit(requests(provider, 1), tag="t")
            await provider.aclose()

        run(go)
        assert server.create_attempts == 2 and len(server.creates) == 1


def test_results_are_streamed_line_by_line() -> None:
    with ScriptedOpenAIBatchServer(lambda r: Reply.text("x" * 2000)) as server:
        provider = provider_for(server)

        async def go() -> int:
            batch_id = await provider.submit(requests(provider, 500), tag="t")
            await until_finished(provider, batch_id)
            n = 0
            async for result in provider.results(batch_id):
                assert result.disposition is Disposition.succeeded
                n += 1
            await provider.aclose()
            return n

        assert run(go) == 500
