"""Several executors on one job: the chaos test, lease takeover fencing and job-wide concurrency on
both stores (SQLite: one host, writers queued by BEGIN IMMEDIATE); the job-wide budget and
LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agentic_batch.engine.procs import process_alive
from agentic_batch.service import Orchestrator
from agentic_batch.spec import JobSpec
from tests.fixtures.abp import ABP, wait_status, wait_until
from tests.fixtures.funcs import ref
from tests.fixtures.stores import orchestrator_on


@pytest.fixture(params=["sqlite", "postgresql"])
def any_orch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An Orchestrator on a fresh SQLite or PostgreSQL store (executors it spawns use the same one)."""
    with orchestrator_on(request.param, monkeypatch) as orch:
        yield orch


@pytest.fixture
def pg_orch(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An Orchestrator (and every executor it spawns, via the environment) on a fresh PostgreSQL schema."""
    with orchestrator_on("postgresql", monkeypatch) as orch:
        yield orch


def job_of(orch: Orchestrator, workdir: Path, n: int, func: str = "whoami", rows: list | None = None,  # type: ignore[type-arg]
           **kw) -> int:  # type: ignore[no-untyped-def]
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows or [{"id": i} for i in range(n)]))
    spec = JobSpec(name="multi", source={"kind": "jsonl", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref(func)}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def live_pids(orch: Orchestrator, job: int) -> list[int]:
    return [e.pid for e in orch.status(job).executor.executors if e.state == "running"]


def test_sqlite_runs_several_executors_from_the_cli(orch: Orchestrator, workdir: Path) -> None:
    """`abp start --executors 2` on the default (SQLite) store: two executors share the job, each unit once."""
    gate = workdir / "gate"  # the units wait for it, so the job cannot end before both executors are in
    job = job_of(orch, workdir, 300, func="whoami_gated", concurrency=4,
                 rows=[{"id": i, "gate": str(gate)} for i in range(300)])
    started = subprocess.run([*ABP, "start", str(job), "--skip-test", "--executors", "2"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "ABP_TEST_SLEEP": "0.01"})
    assert started.returncode == 0, started.stderr
    pids = wait_until(lambda: len(live_pids(orch, job)) == 2 and live_pids(orch, job), timeout=30,
                      what="two executors")
    gate.touch()
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED"}, timeout=120)
    assert final.status == "COMPLETED" and final.completed == 300, final
    rows = orch.results(job)
    assert sorted(r["unit"] for r in rows) == list(range(1, 301)) and all(r["attempts"] == 1 for r in rows)
    assert {int(r["output"]) for r in rows} <= set(pids)


def test_the_cli_runs_a_whole_job_on_postgres(pg_orch: Orchestrator, workdir: Path) -> None:
    (workdir / "a.txt").write_text("one two three\n")
    (workdir / "b.txt").write_text("four five\n")
    created = subprocess.run([*ABP, "create", "--name", "pg", "--files", "*.txt", "--command", "wc -w {{ path }}"],
                             capture_output=True, text=True, cwd=workdir, timeout=60)
    assert created.returncode == 0, created.stderr
    job = created.stdout.strip()
    assert subprocess.run([*ABP, "start", job], capture_output=True, text=True, timeout=60).returncode == 0
    assert subprocess.run([*ABP, "start", job, "--approve"], capture_output=True, text=True, timeout=60).returncode == 0
    waited = subprocess.run([*ABP, "wait", job, "--timeout", "60"], capture_output=True, text=True, timeout=90)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert sorted(r["output"].split()[0] for r in pg_orch.results(int(job))) == ["2", "3"]


def test_chaos_three_executors_one_killed_one_terminated(any_orch: Orchestrator, workdir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.03")
    monkeypatch.setenv("ABP_LEASE_SECONDS", "6")
    job = job_of(any_orch, workdir, 2000, concurrency=8)
    any_orch.start(job, skip_test=True, executors=3)
    pids = wait_until(lambda: len(live_pids(any_orch, job)) == 3 and live_pids(any_orch, job), timeout=30,
                      what="three executors")
    wait_until(lambda: any_orch.status(job).completed >= 300, timeout=120, what="progress")
    os.kill(pids[1], signal.SIGKILL)
    os.kill(pids[2], signal.SIGTERM)
    final = wait_status(any_orch, job, {"COMPLETED", "FAILED", "PAUSED"}, timeout=300)
    assert final.status == "COMPLETED", final
    assert final.completed == 2000 and final.running == final.pending == final.failed == 0
    rows = any_orch.results(job)
    assert len(rows) == 2000 and {r["unit"] for r in rows} == set(range(1, 2001))
    writers = {int(r["output"]) for r in rows}
    assert pids[0] in writers and writers <= set(pids)  # only executors of this job wrote results
    # every result was written by the executor that held the unit's lease at the end
    for row in rows[:2000:50]:
        unit = any_orch.store.browse.unit_by_number(final.id, row["unit"])
        assert unit.lease_owner and unit.lease_owner.split("-")[-2] == row["output"]
    assert any("is gone" in line.message for line in any_orch.logs(job, level="warning"))


def test_a_taken_over_unit_is_written_only_by_its_new_owner(any_orch: Orchestrator, workdir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_TEST_SLEEP", "4")
    monkeypatch.setenv("ABP_LEASE_SECONDS", "2")
    job = job_of(any_orch, workdir, 2, concurrency=2)
    any_orch.start(job, skip_test=True)
    [first] = wait_until(lambda: live_pids(any_orch, job), timeout=30, what="an executor")
    wait_until(lambda: any_orch.status(job).running == 2, timeout=30, what="both units running")
    os.kill(first, signal.SIGSTOP)  # frozen: its leases expire while its agents are mid-flight
    try:
        any_orch.add_executors(job, 1)
        time.sleep(3)
        done = wait_status(any_orch, job, {"COMPLETED"}, timeout=60)
    finally:
        os.kill(first, signal.SIGCONT)
    assert done.completed == 2
    second = [p for p in live_pids(any_orch, job) if p != first] or \
        [int(r["output"]) for r in any_orch.results(job)]
    time.sleep(1.5)  # the old owner wakes up and tries to write its stale results
    for row in any_orch.results(job):
        assert int(row["output"]) != first and int(row["output"]) in second
        assert row["attempts"] == 2


def test_budget_holds_for_the_job_as_a_whole(any_orch: Orchestrator, workdir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.2")
    gate = workdir / "gate"  # the units wait for it: both executors spend, neither finishes the budget alone
    job = job_of(any_orch, workdir, 60, func="priced_gated", concurrency=2, budget_usd=1.0,
                 rows=[{"id": i, "gate": str(gate)} for i in range(60)])
    any_orch.start(job, skip_test=True, executors=2)
    wait_until(lambda: len(live_pids(any_orch, job)) == 2, timeout=30, what="two executors")
    gate.touch()
    paused = wait_status(any_orch, job, {"PAUSED", "COMPLETED"}, timeout=120)
    assert paused.status == "PAUSED" and paused.pause_reason == "budget"
    assert paused.cost_usd <= 1.0 + 0.1 * 4 + 1e-9  # at most the in-flight units of both executors over


def test_status_lists_every_executor(pg_orch: Orchestrator, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.5")
    monkeypatch.setenv("ABP_STOP_GRACE_SECONDS", "1")  # the gated units never finish: stop them soon
    # units 30.. wait for a gate nobody opens, so the job is still RUNNING when the test stops it (30 units
    # of 0.5 s leave both executors time to complete some, however slow the machine)
    job = job_of(pg_orch, workdir, 40, func="whoami_gated", concurrency=2,
                 rows=[{"id": i, "gate": str(workdir / "never") if i >= 30 else None} for i in range(40)])
    pg_orch.start(job, skip_test=True, executors=2)
    executors = wait_until(lambda: len(live_pids(pg_orch, job)) == 2 and pg_orch.status(job).executor.executors,
                           timeout=30, what="two executors")
    assert {e.host for e in executors} and all(e.heartbeat_at and e.pid for e in executors)
    wait_until(lambda: all((e.units_done or 0) > 0 for e in pg_orch.status(job).executor.executors),
               timeout=60, what="both executors to complete units")
    shown = subprocess.run([*ABP, "status", str(job)], capture_output=True, text=True, timeout=60).stdout
    assert all(f"pid {e.pid}" in shown for e in executors) and "unit(s) done" in shown
    pg_orch.stop(job)  # reaches every executor
    assert wait_status(pg_orch, job, {"PAUSED"}, timeout=60).running == 0
    wait_until(lambda: not live_pids(pg_orch, job), timeout=30, what="all executors gone")


def test_listen_notify_delivers_changes(pg_orch: Orchestrator) -> None:
    got: list[tuple[int, str]] = []
    listener = pg_orch.store.changes.listen(lambda job, what: got.append((job, what)))
    assert listener is not None
    try:
        pg_orch.store.changes.notify(7, "stop")
        wait_until(lambda: (7, "stop") in got, timeout=10, what="the notification")
    finally:
        listener.stop()


def test_concurrency_is_job_wide_across_executors(any_orch: Orchestrator, workdir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--concurrency 4 with three executors: never more than 4 units RUNNING for the job (it was 4 per
    executor, 12 in all), sampled from the store throughout the run. The units wait for a gate until
    all three executors are in and have read their share of the slots (their first control pass, 1 s
    in): otherwise the first one could finish the job alone on a slow machine, as it keeps its slots
    by writing results and claiming in one transaction."""
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.02")
    gate = workdir / "gate"
    job = job_of(any_orch, workdir, 600, func="whoami_gated", concurrency=4,
                 rows=[{"id": i, "gate": str(gate)} for i in range(600)])
    any_orch.start(job, skip_test=True, executors=3)
    wait_until(lambda: len(live_pids(any_orch, job)) == 3, timeout=30, what="three executors")
    samples: list[int] = []
    shared = time.monotonic() + 1.5
    while time.monotonic() < shared:
        samples.append(any_orch.store.units.count_units(job)["RUNNING"])
    gate.touch()
    while (record := any_orch.store.jobs.get_job(job)).status == "RUNNING":
        samples.append(any_orch.store.units.count_units(job)["RUNNING"])
    final = any_orch.status(job)
    assert record.status == "COMPLETED" and final.completed == 600, final
    assert 2 <= max(samples) <= 4, sorted(samples)[-10:]
    writers = {r["output"] for r in any_orch.results(job)}
    assert len(writers) >= 2  # the executors shared the job's four slots


def test_every_executor_killed_then_resumed_with_two(any_orch: Orchestrator, workdir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of both executors mid-run: the job stays RUNNING with nobody on it until `resume
    --executors 2`, which takes their units back at once (dead pids on this host) and completes each
    unit exactly once."""
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.02")
    job = job_of(any_orch, workdir, 1000, concurrency=8)
    any_orch.start(job, skip_test=True, executors=2)
    pids = wait_until(lambda: len(live_pids(any_orch, job)) == 2 and live_pids(any_orch, job), timeout=30,
                      what="two executors")
    wait_until(lambda: any_orch.status(job).completed >= 100, timeout=120, what="progress")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(process_alive(pid) for pid in pids), timeout=30, what="both executors gone")
    assert any_orch.status(job).status == "RUNNING"
    any_orch.resume(job, executors=2)
    final = wait_status(any_orch, job, {"COMPLETED", "FAILED", "PAUSED"}, timeout=300)
    assert final.status == "COMPLETED" and final.completed == 1000, final
    assert final.running == final.pending == final.failed == 0
    rows = any_orch.results(job)
    assert sorted(r["unit"] for r in rows) == list(range(1, 1001))
    writers = {int(r["output"]) for r in rows}
    assert writers - set(pids), "the resumed executors wrote results"

