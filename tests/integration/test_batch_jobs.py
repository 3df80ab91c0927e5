"""`--batch-api` jobs end to end: real detached executors, the real `openai` SDK, the scripted Files +
Batches server. The server's `creates` count every accepted batch, so "0 submitted twice" is checked
against what the provider actually received, and the store's unit statuses say "0 lost".
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.batchapi.provider import parse_custom_id
from agentic_batch.errors import InvalidSpec
from agentic_batch.spec import JobSpec
from agentic_batch.testing.openai_batches import ScriptedOpenAIBatchServer
from agentic_batch.testing.openai_server import Reply, Request
from agentic_batch.workers.pricing import Pricing
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.batch_jobs import batch_spec as shared_batch_spec
from tests.fixtures.batch_jobs import start

MODEL = "gpt-4o-mini"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIBatchServer]:
    with ScriptedOpenAIBatchServer(lambda r: Reply.text("done: " + r.first_user_text, usage=(100, 20)),
                                   validating_s=0.2, in_progress_s=0.5, finalizing_s=0.1) as running:
        yield running


def batch_spec(workdir: Path, server: ScriptedOpenAIBatchServer, n: int, **options: Any) -> JobSpec:
    return shared_batch_spec(workdir, "openai", MODEL, server.url, n, **options)


def submissions(server: ScriptedOpenAIBatchServer) -> Counter[int]:
    """How many accepted batches carried each unit (any attempt)."""
    seen: Counter[int] = Counter()
    for record in server.creates:
        for custom_id in record.custom_ids:
            parsed = parse_custom_id(custom_id)
            assert parsed is not None
            seen[parsed[0]] += 1
    return seen


def executor_pid(orch: Any, job_id: int) -> int:
    return int(wait_until(lambda: next((e.pid for e in orch.store.executors.list_executors(job_id, live_only=True)),
                                       None), what="an executor"))


def test_a_batch_job_completes_at_half_the_online_price(orch: Any, workdir: Path,
                                                        server: ScriptedOpenAIBatchServer) -> None:
    job_id = start(orch, batch_spec(workdir, server, 12, batch_size=5), workdir)
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED", status
    assert [len(r.custom_ids) for r in server.creates] == [5, 5, 2]
    assert set(submissions(server).values()) == {1}
    units = list(orch.store.units.iter_units(job_id))
    assert all(u.output == f"done: Do item {u.payload['id']}" for u in units)
    online = Pricing(MODEL).cost(100, 20)
    assert all(u.cost_usd == pytest.approx(online / 2) for u in units)
    assert all(u.tokens_in == 100 and u.tokens_out == 20 for u in units)
    batches = orch.store.batches.list_batches(job_id)
    assert [b.state for b in batches] == ["done"] * 3 and all(b.provider_id for b in batches)
    kinds = [e.kind for e in orch.store.events.list_events(unit_id=units[0].id)]
    assert kinds == ["start", "usage", "assistant", "end"]


def test_partial_failure_retries_errored_units_in_a_next_batch(orch: Any, workdir: Path) -> None:
    tries: Counter[str] = Counter()

    def responder(request: Request) -> Reply:
        text = request.first_user_text
        tries[text.split("\n")[0]] += 1
        if text.startswith("Do item 1") and tries["Do item 1"] == 1:
            return Reply.error(500, "server hiccup")
        if text.startswith("Do item 2"):
            return Reply.error(400, "content policy")
        return Reply.text("ok")

    with ScriptedOpenAIBatchServer(responder, validating_s=0.1, in_progress_s=0.2, finalizing_s=0.1) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 4), workdir)
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "FAILED"
        by_id = {u.payload["id"]: u for u in orch.store.units.iter_units(job_id)}
        assert by_id[1].status == "COMPLETED" and by_id[1].attempt == 2  # retried in the second batch
        assert by_id[2].status == "FAILED" and "content policy" in (by_id[2].error or "")
        assert by_id[2].error_class == "permanent" and by_id[2].attempt == 1
        assert [len(r.custom_ids) for r in srv.creates] == [4, 1]


def test_kill_9_mid_batch_then_resume_loses_nothing_and_submits_nothing_twice(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(lambda r: Reply.text("ok"), validating_s=0.2, in_progress_s=3.0,
                                   finalizing_s=0.1) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 30, batch_size=10), workdir)
        wait_until(lambda: len(srv.creates) == 3, what="three batches submitted")
        os.kill(executor_pid(orch, job_id), signal.SIGKILL)
        time.sleep(0.5)
        assert orch.store.units.count_units(job_id)["RUNNING"] == 30  # still leased to their batches
        result = abp("resume", str(job_id), cwd=workdir)
        assert result.returncode == 0, result.stderr
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "COMPLETED"
        assert len(srv.creates) == 3 and set(submissions(srv).values()) == {1}
        assert orch.store.units.count_units(job_id)["COMPLETED"] == 30


@pytest.mark.parametrize("point", ["after_create", "before_create"])
def test_crash_between_create_and_recording_the_id(orch: Any, workdir: Path, server: ScriptedOpenAIBatchServer,
                                                   point: str) -> None:
    """after_create: the provider made the batch, the store never heard its id: resume adopts it by tag.
    before_create: nothing reached the provider: resume submits the intent row's units, once."""
    job_id = start(orch, batch_spec(workdir, server, 6), workdir, env={"ABP_TEST_BATCH_CRASH": point})
    wait_until(lambda: not orch.store.executors.list_executors(job_id, live_only=True)
               or all(not _alive(e.pid) for e in orch.store.executors.list_executors(job_id, live_only=True)),
               timeout=30, what="the executor to crash")
    rows = orch.store.batches.list_batches(job_id)
    assert len(rows) == 1 and rows[0].provider_id is None and rows[0].state == "intent"
    assert len(server.creates) == (1 if point == "after_create" else 0)
    result = abp("resume", str(job_id), cwd=workdir, env={"ABP_TEST_BATCH_CRASH": ""})
    assert result.returncode == 0, result.stderr
    status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
    assert status.status == "COMPLETED"
    assert len(server.creates) == 1 and set(submissions(server).values()) == {1}
    row = orch.store.batches.list_batches(job_id)[0]
    assert row.provider_id == server.creates[0].id and row.state == "done"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_cancel_cancels_the_provider_batches(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(stuck=True) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 5), workdir)
        wait_until(lambda: len(srv.creates) == 1 and orch.store.batches.list_batches(job_id)[0].provider_id,
                   what="a batch submitted")
        result = abp("cancel", str(job_id), cwd=workdir)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: srv.cancels == [srv.creates[0].id], timeout=30, what="the provider batch cancelled")
        assert orch.store.units.count_units(job_id)["CANCELLED"] == 5
        wait_until(lambda: orch.store.batches.list_batches(job_id)[0].state == "done", what="the batch closed")


def test_a_batch_past_the_providers_window_is_cancelled_and_its_units_resubmitted(orch: Any, workdir: Path) -> None:
    """A provider batch that never ends (a provider bug, a lost batch) must not hold its units for ever."""
    with ScriptedOpenAIBatchServer(stuck=True) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 3, max_retries=0), workdir,
                       env={"ABP_BATCH_OVERDUE_SECONDS": "1.5"})
        wait_until(lambda: len(srv.cancels) >= 1, timeout=30, what="the overdue batch cancelled")
        assert srv.cancels[0] == srv.creates[0].id
        srv.stuck = False
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=60)
        assert status.status == "COMPLETED", status
        seen = submissions(srv)
        assert len(seen) == 3 and all(count >= 2 for count in seen.values()), seen
        # max_retries=0 and COMPLETED: the cancelled batch spent no retry
        assert all(u.error_count == 0 for u in orch.store.units.iter_units(job_id))
        logs = " ".join(line.message for line in orch.store.logs.list_logs(job_id, limit=5000))
        assert "past the provider's 24 h window" in logs


def test_cancel_of_a_paused_job_cancels_its_batches_without_an_executor(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(stuck=True) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 3), workdir)
        wait_until(lambda: orch.store.batches.list_batches(job_id)
                   and orch.store.batches.list_batches(job_id)[0].provider_id, what="a batch submitted")
        assert abp("stop", str(job_id), cwd=workdir).returncode == 0
        wait_status(orch, job_id, {"PAUSED"}, timeout=30)
        assert srv.cancels == []  # a pause leaves the batch running at the provider
        assert orch.store.units.count_units(job_id)["RUNNING"] == 3
        orch.cancel(job_id)
        assert srv.cancels == [srv.creates[0].id]
        assert orch.store.batches.list_batches(job_id)[0].state == "done"


def test_expired_requests_go_back_to_pending_without_spending_a_retry(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(expire=True, expire_completes=2, validating_s=0.1, in_progress_s=0.2) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 4, max_retries=0), workdir)
        wait_until(lambda: len(srv.creates) >= 2, timeout=60, what="a second batch for the expired units")
        srv.expire = False
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "COMPLETED"  # max_retries=0: an expiry spent no retry
        assert [len(r.custom_ids) for r in srv.creates][:2] == [4, 2]
        assert all(u.error_count == 0 for u in orch.store.units.iter_units(job_id))


def test_429_on_create_backs_off_and_submits_once(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(create_429=2, validating_s=0.1, in_progress_s=0.2) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 3), workdir)
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "COMPLETED"
        assert srv.create_attempts == 3 and len(srv.creates) == 1
        states = [b.state for b in reversed(orch.store.batches.list_batches(job_id))]
        assert states == ["refused", "refused", "done"]
        assert all(u.error_count == 0 for u in orch.store.units.iter_units(job_id))


def test_budget_counts_a_submitted_batch_before_the_next(orch: Any, workdir: Path,
                                                         server: ScriptedOpenAIBatchServer) -> None:
    # each unit: ~30 prompt tokens + 256 assumed output tokens at gpt-4o-mini's batch price: about $0.00008
    job_id = start(orch, batch_spec(workdir, server, 40, budget_usd=0.0004, batch_size=3), workdir)
    status = wait_status(orch, job_id, {"PAUSED", "COMPLETED"}, timeout=90)
    assert status.status == "PAUSED" and status.pause_reason == "budget"
    completed = orch.store.units.count_units(job_id)["COMPLETED"]
    assert 0 < completed < 40
    assert orch.store.units.unit_totals(job_id)["cost_usd"] <= 0.0004 * 1.5


def test_refused_options_say_so_in_one_line(orch: Any, workdir: Path, server: ScriptedOpenAIBatchServer) -> None:
    with pytest.raises(InvalidSpec, match="cannot run tools"):
        orch.create(batch_spec(workdir, server, 2, worker_options={"allow_commands": True}), cwd=workdir)
    with pytest.raises(ValueError, match="need"):
        JobSpec(name="x", source={"kind": "jsonl", "path": "/x.jsonl"}, prompt="p", batch_size=5)
    spec = JobSpec(name="x", source={"kind": "jsonl", "path": str(workdir / "items.jsonl")}, prompt="{{ text }}",
                   worker="command", worker_options={"command": "echo"}, batch_api=True)
    with pytest.raises(InvalidSpec, match="works with the anthropic and openai"):
        orch.create(spec, cwd=workdir)
    assert orch.store.jobs.list_jobs() == []


def test_status_shows_batches_in_flight_on_every_interface(orch: Any, workdir: Path) -> None:
    from agentic_batch.mcp_server.shaping import status_view

    with ScriptedOpenAIBatchServer(stuck=True) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 4, batch_size=2), workdir)
        wait_until(lambda: orch.store.batches.count_submitted(job_id) == 2, what="two batches submitted")
        wait_until(lambda: all(b.status == "in_progress" for b in orch.status(job_id).batches.batches),
                   timeout=30, what="the batches polled")
        view = orch.status(job_id)
        assert view.batches is not None
        assert (view.batches.in_flight, view.batches.units, view.batches.submitted) == (2, 4, 2)
        assert view.batches.projected_usd > 0 and view.projected_cost_usd == pytest.approx(view.batches.projected_usd)
        assert {b.provider_id for b in view.batches.batches} == {r.id for r in srv.creates}
        text = abp("status", str(job_id), cwd=workdir).stdout
        assert "2 in flight (4 unit(s)" in text and "in_progress" in text
        assert status_view(view)["batches"]["in_flight"] == 2
        assert abp("cancel", str(job_id), cwd=workdir).returncode == 0
        wait_until(lambda: orch.status(job_id).batches.in_flight == 0, timeout=30, what="the batches closed")


def test_fallback_online_runs_what_the_batches_did_not_finish(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(lambda r: Reply.text("online " + r.first_user_text), stuck=True) as srv:
        spec = batch_spec(workdir, srv, 3, batch_fallback="online", batch_fallback_after_s=1.0)
        job_id = start(orch, spec, workdir)
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=90)
        assert status.status == "COMPLETED"
        assert srv.cancels == [srv.creates[0].id] and len(srv.creates) == 1
        online = [r for r in srv.requests if r.path.endswith("/chat/completions") and r.tools is not None]
        units = list(orch.store.units.iter_units(job_id))
        assert all(u.output and u.output.startswith("online Do item") for u in units)
        assert all(u.error_count == 0 for u in units)  # the cancelled batch spent no retry
        assert len(online) >= 3
        assert orch.store.batches.list_batches(job_id)[0].state == "done"


def test_a_results_download_cut_half_way_is_read_again_on_the_next_check(orch: Any, workdir: Path) -> None:
    with ScriptedOpenAIBatchServer(lambda r: Reply.text("ok " + "x" * 500), cut_downloads=1, validating_s=0.1,
                                   in_progress_s=0.2) as srv:
        job_id = start(orch, batch_spec(workdir, srv, 1200), workdir)
        status = wait_status(orch, job_id, {"COMPLETED", "FAILED"}, timeout=120)
        assert status.status == "COMPLETED" and srv.cut_downloads == 0
        assert len(srv.creates) == 1
        units = list(orch.store.units.iter_units(job_id))
        assert all(u.attempt == 1 and u.error_count == 0 for u in units)
        logs = [line.message for line in orch.store.logs.list_logs(job_id, limit=5000)]
        assert any("next check" in m for m in logs), logs[-5:]  # the cut was seen, then read whole


def test_a_batch_job_runs_one_executor(orch: Any, workdir: Path, server: ScriptedOpenAIBatchServer) -> None:
    job_id = int(orch.create(batch_spec(workdir, server, 2), cwd=workdir).job_id)
    with pytest.raises(InvalidSpec, match="runs one executor"):
        orch.start(job_id, skip_test=True, executors=2)
    assert orch.status(job_id).status == "CREATED"


def test_kill_9_and_resume_on_postgresql(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same guarantee on the multi-host store: intent rows, leases to batches and adoption."""
    from agentic_batch.service import Orchestrator
    from tests.fixtures.stores import pg_available, pg_schema_url

    available, reason = pg_available()
    if not available:
        pytest.skip(reason)
    urls = pg_schema_url()
    monkeypatch.setenv("ABP_DB_URL", next(urls))
    pg = Orchestrator()
    try:
        with ScriptedOpenAIBatchServer(lambda r: Reply.text("ok"), validating_s=0.2, in_progress_s=2.0) as srv:
            job_id = start(pg, batch_spec(workdir, srv, 20, batch_size=10), workdir,
                           env={"ABP_TEST_BATCH_CRASH": "after_create"})
            wait_until(lambda: len(srv.creates) == 1 and not any(
                _alive(e.pid) for e in pg.store.executors.list_executors(job_id, live_only=True)),
                timeout=30, what="the executor to crash after its first create")
            assert abp("resume", str(job_id), cwd=workdir, env={"ABP_TEST_BATCH_CRASH": ""}).returncode == 0
            wait_until(lambda: len(srv.creates) == 2, timeout=30, what="the second batch")
            os.kill(executor_pid(pg, job_id), signal.SIGKILL)
            assert abp("resume", str(job_id), cwd=workdir).returncode == 0
            status = wait_status(pg, job_id, {"COMPLETED", "FAILED"}, timeout=90)
            assert status.status == "COMPLETED"
            assert len(srv.creates) == 2 and set(submissions(srv).values()) == {1}
            assert pg.store.units.count_units(job_id)["COMPLETED"] == 20
    finally:
        pg.store.close()
        urls.close()
