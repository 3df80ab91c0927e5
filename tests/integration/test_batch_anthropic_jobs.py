"""`--batch-api` for `anthropic` jobs end to end: real detached executors, the real `anthropic` SDK, the
scripted Message Batches server. The server keeps every batch it accepted with its custom ids, so
"0 submitted twice" is checked against what the provider received, and the unit statuses say "0 lost".
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.batchapi.anthropic_batch import split_custom_id
from agentic_batch.batchapi.provider import parse_custom_id
from agentic_batch.spec import JobSpec
from agentic_batch.testing.anthropic_server import BatchTiming, MessagesRequest, Reply, ScriptedAnthropicServer
from agentic_batch.workers.pricing import Pricing
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.batch_jobs import batch_spec as shared_batch_spec
from tests.fixtures.batch_jobs import start
from tests.fixtures.stores import orchestrator_on

MODEL = "claude-haiku-4-5"


@pytest.fixture(autouse=True)
def _batch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short create deadline, so a crash before the create costs the test 2.5 s, not 5 minutes."""
    monkeypatch.setenv("ABP_BATCH_CREATE_TIMEOUT", "2")
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ABP_TEST_BATCH_CRASH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer(lambda r: Reply.text("done: " + r.first_user_text, usage=(100, 20))) as running:
        running.batches.default = BatchTiming(seconds=0.5)
        yield running


def batch_spec(workdir: Path, server: ScriptedAnthropicServer, n: int, **options: Any) -> JobSpec:
    return shared_batch_spec(workdir, "anthropic", MODEL, server.url, n, **options)


def submissions(server: ScriptedAnthropicServer) -> Counter[int]:
    """How many accepted batches carried each unit (any attempt)."""
    seen: Counter[int] = Counter()
    for batch in server.batches.all():
        for wire_id in batch.custom_ids:
            parsed = parse_custom_id(split_custom_id(wire_id)[0])
            assert parsed is not None, wire_id
            seen[parsed[0]] += 1
    return seen


def sizes(server: ScriptedAnthropicServer) -> list[int]:
    return [len(b.requests) for b in server.batches.all()]


def executor_pid(orch: Any, job_id: int) -> int:
    return int(wait_until(lambda: next((e.pid for e in orch.store.executors.list_executors(job_id, live_only=True)),
                                       None), what="an executor"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def executor_gone(orch: Any, job_id: int) -> bool:
    return all(not _alive(e.pid) for e in orch.store.executors.list_executors(job_id, live_only=True))


def test_an_anthropic_batch_job_completes_at_half_the_online_price(orch: Any, workdir: Path,
                                                                   server: ScriptedAnthropicServer) -> None:
    job_id = start(orch, batch_spec(workdir, server, 12, batch_size=5), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED", status
    assert sizes(server) == [5, 5, 2] and set(submissions(server).values()) == {1}
    assert server.count("/v1/messages") == 0  # nothing went online
    units = list(orch.store.units.iter_units(job_id))
    assert all(u.output == f"done: Do item {u.payload['id']}" for u in units)
    online = Pricing(MODEL).cost(100, 20)
    assert all(u.cost_usd == pytest.approx(online / 2) for u in units)
    assert all(u.tokens_in == 100 and u.tokens_out == 20 for u in units)
    batches = orch.store.batches.list_batches(job_id)
    assert [b.state for b in batches] == ["done"] * 3
    assert {b.provider_id for b in batches} == {b.id for b in server.batches.all()}
    request = server.batches.all()[0].requests[0]["params"]
    assert request["model"] == MODEL and "tools" not in request


def test_output_schema_is_asked_for_in_the_prompt_and_validated(orch: Any, workdir: Path,
                                                                server: ScriptedAnthropicServer) -> None:
    server.responder = lambda r: Reply.text('{"n": 3}' if "item 0" in r.first_user_text else "no JSON here")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    job_id = start(orch, batch_spec(workdir, server, 2, output_schema=schema, max_retries=0), workdir)
    wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    by_id = {u.payload["id"]: u for u in orch.store.units.iter_units(job_id)}
    assert by_id[0].status == "COMPLETED" and by_id[0].data == {"n": 3}
    assert by_id[1].status == "FAILED" and by_id[1].error_kind == "schema_invalid"
    prompt = server.batches.all()[0].requests[0]["params"]["messages"][0]["content"]
    assert "JSON Schema" in prompt


def test_partial_failure_retries_errored_units_in_a_next_batch(orch: Any, workdir: Path,
                                                               server: ScriptedAnthropicServer) -> None:
    tries: Counter[str] = Counter()

    def responder(request: MessagesRequest) -> Reply:
        first_line = request.first_user_text.split("\n")[0]
        tries[first_line] += 1
        if first_line == "Do item 1" and tries[first_line] == 1:
            return Reply.error(529)
        if first_line == "Do item 2":
            return Reply.error(400, message="content policy")
        return Reply.text("ok")

    server.responder = responder
    job_id = start(orch, batch_spec(workdir, server, 4), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "FAILED"
    by_id = {u.payload["id"]: u for u in orch.store.units.iter_units(job_id)}
    assert by_id[1].status == "COMPLETED" and by_id[1].attempt == 2  # retried in the second batch
    assert by_id[2].status == "FAILED" and "content policy" in (by_id[2].error or "")
    assert by_id[2].error_class == "permanent" and by_id[2].attempt == 1
    assert sizes(server) == [4, 1]


def test_kill_9_mid_batch_then_resume_loses_nothing_and_submits_nothing_twice(
        orch: Any, workdir: Path, server: ScriptedAnthropicServer) -> None:
    server.batches.default = BatchTiming(seconds=3.0)
    job_id = start(orch, batch_spec(workdir, server, 30, batch_size=10), workdir)
    wait_until(lambda: len(server.batches.all()) == 3, what="three batches submitted")
    wait_until(lambda: all(b.provider_id for b in orch.store.batches.list_batches(job_id)), what="ids recorded")
    os.kill(executor_pid(orch, job_id), signal.SIGKILL)
    time.sleep(0.5)
    assert orch.store.units.count_units(job_id)["RUNNING"] == 30  # still leased to their batches
    result = abp("resume", str(job_id), cwd=workdir)
    assert result.returncode == 0, result.stderr
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    assert sizes(server) == [10, 10, 10] and set(submissions(server).values()) == {1}
    assert orch.store.units.count_units(job_id)["COMPLETED"] == 30


@pytest.mark.parametrize(("point", "seconds"), [("after_create", 0.5), ("after_create", 4.0),
                                                 ("before_create", 0.5)])
def test_crash_between_create_and_recording_the_id(orch: Any, workdir: Path, server: ScriptedAnthropicServer,
                                                   point: str, seconds: float) -> None:
    """after_create: Anthropic made the batch, the store never heard its id. Resume adopts it: at once
    if it has ended (its results name the tag), once it ends if still running (4 s). before_create:
    nothing reached the provider; once the create window has passed, the units are submitted, once."""
    server.batches.default = BatchTiming(seconds=seconds)
    job_id = start(orch, batch_spec(workdir, server, 6), workdir, env={"ABP_TEST_BATCH_CRASH": point})
    wait_until(lambda: executor_gone(orch, job_id), timeout=30, what="the executor to crash")
    rows = orch.store.batches.list_batches(job_id)
    assert len(rows) == 1 and rows[0].provider_id is None and rows[0].state == "intent"
    assert len(server.batches.all()) == (1 if point == "after_create" else 0)
    result = abp("resume", str(job_id), cwd=workdir, env={"ABP_TEST_BATCH_CRASH": ""})
    assert result.returncode == 0, result.stderr
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    assert len(server.batches.all()) == 1 and set(submissions(server).values()) == {1}
    row = orch.store.batches.list_batches(job_id)[0]
    assert row.provider_id == server.batches.all()[0].id and row.state == "done"


def test_a_create_whose_answer_never_came_is_adopted_not_resent(orch: Any, workdir: Path,
                                                                server: ScriptedAnthropicServer) -> None:
    """The create reached Anthropic but its answer did not reach us (timeout): no crash at all, and
    still no second batch."""
    server.batches.hold_create = 30.0
    server.batches.default = BatchTiming(seconds=4.0)
    job_id = start(orch, batch_spec(workdir, server, 5), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    assert len(server.batches.all()) == 1 and set(submissions(server).values()) == {1}
    assert orch.store.batches.list_batches(job_id)[0].provider_id == server.batches.all()[0].id


def test_cancel_cancels_the_provider_batch(orch: Any, workdir: Path, server: ScriptedAnthropicServer) -> None:
    server.batches.default = BatchTiming(seconds=math.inf)
    job_id = start(orch, batch_spec(workdir, server, 5), workdir)
    wait_until(lambda: orch.store.batches.list_batches(job_id)
               and orch.store.batches.list_batches(job_id)[0].provider_id, what="a batch submitted")
    result = abp("cancel", str(job_id), cwd=workdir)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: server.batches.all()[0].cancel_at is not None, timeout=30, what="the batch cancelled")
    assert orch.store.units.count_units(job_id)["CANCELLED"] == 5
    wait_until(lambda: orch.store.batches.list_batches(job_id)[0].state == "done", what="the batch closed")
    wait_until(lambda: server.batches.all()[0].ended_at is not None, what="the provider batch ended")
    assert len(server.batches.all()) == 1


def test_cancel_of_a_paused_job_cancels_its_batch_without_an_executor(orch: Any, workdir: Path,
                                                                      server: ScriptedAnthropicServer) -> None:
    server.batches.default = BatchTiming(seconds=math.inf)
    job_id = start(orch, batch_spec(workdir, server, 3), workdir)
    wait_until(lambda: orch.store.batches.list_batches(job_id)
               and orch.store.batches.list_batches(job_id)[0].provider_id, what="a batch submitted")
    assert abp("stop", str(job_id), cwd=workdir).returncode == 0
    wait_status(orch, job_id, {"PAUSED"}, timeout=30)
    assert server.batches.all()[0].cancel_at is None  # a pause leaves the batch running
    orch.cancel(job_id)
    assert server.batches.all()[0].cancel_at is not None
    assert orch.store.batches.list_batches(job_id)[0].state == "done"


def test_expired_requests_go_back_to_pending_without_spending_a_retry(orch: Any, workdir: Path,
                                                                      server: ScriptedAnthropicServer) -> None:
    server.batches.planned.append(BatchTiming(seconds=2.0, expire_after=1.0))  # 2 of 4 run, 2 expire
    job_id = start(orch, batch_spec(workdir, server, 4, max_retries=0), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"  # max_retries=0: an expiry spent no retry
    assert sizes(server) == [4, 2]
    assert all(u.error_count == 0 for u in orch.store.units.iter_units(job_id))


def test_429_on_create_backs_off_and_submits_once(orch: Any, workdir: Path, server: ScriptedAnthropicServer) -> None:
    server.batches.create_errors.extend([Reply.error(429, headers={"retry-after": "0"})] * 2)
    job_id = start(orch, batch_spec(workdir, server, 3), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    creates = [r for r in server.requests if r.method == "POST" and r.route == "/v1/messages/batches"]
    assert len(creates) == 3 and len(server.batches.all()) == 1
    states = [b.state for b in reversed(orch.store.batches.list_batches(job_id))]
    assert states == ["refused", "refused", "done"]
    assert all(u.error_count == 0 for u in orch.store.units.iter_units(job_id))


def test_fallback_online_runs_what_the_batch_did_not_finish(orch: Any, workdir: Path,
                                                            server: ScriptedAnthropicServer) -> None:
    server.responder = lambda r: Reply.text("online " + r.first_user_text.split("\n")[0], usage=(100, 20))
    server.batches.default = BatchTiming(seconds=math.inf, cancel_seconds=0.2)
    spec = batch_spec(workdir, server, 3, batch_fallback="online", batch_fallback_after_s=1.0)
    job_id = start(orch, spec, workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    (batch,) = server.batches.all()
    assert batch.cancel_at is not None and {r["type"] for r in batch.results.values()} == {"canceled"}
    units = list(orch.store.units.iter_units(job_id))
    assert all(u.output == f"online Do item {u.payload['id']}" for u in units)
    assert all(u.error_count == 0 for u in units)  # the cancelled batch spent no retry
    assert all(u.cost_usd == pytest.approx(Pricing(MODEL).cost(100, 20)) for u in units)  # online: full price
    assert server.count("/v1/messages") == 3


def test_kill_9_and_adoption_on_postgres(monkeypatch: pytest.MonkeyPatch, workdir: Path,
                                         server: ScriptedAnthropicServer) -> None:
    """The multi-host store: a crash after the create (adopted once the batch ends), then a kill -9
    mid-batch of the resumed executor; every unit completed once, every unit submitted once."""
    with orchestrator_on("postgresql", monkeypatch) as orch:
        server.batches.default = BatchTiming(seconds=3.0)
        job_id = start(orch, batch_spec(workdir, server, 8, batch_size=4), workdir,
                       env={"ABP_TEST_BATCH_CRASH": "after_create"})
        wait_until(lambda: executor_gone(orch, job_id), timeout=30, what="the executor to crash")
        assert abp("resume", str(job_id), cwd=workdir, env={"ABP_TEST_BATCH_CRASH": ""}).returncode == 0
        wait_until(lambda: len(server.batches.all()) == 2, timeout=60, what="the second batch")
        os.kill(executor_pid(orch, job_id), signal.SIGKILL)
        assert abp("resume", str(job_id), cwd=workdir).returncode == 0
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "COMPLETED"
        assert sizes(server) == [4, 4] and set(submissions(server).values()) == {1}
        rows = orch.store.batches.list_batches(job_id)
        assert sorted(r.provider_id or "" for r in rows) == sorted(b.id for b in server.batches.all())
