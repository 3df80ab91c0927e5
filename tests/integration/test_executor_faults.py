"""The delivery guarantee under faults, with real detached executors and real agent processes:
kill -9, SIGTERM, double signals, concurrent resumes, hanging units."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import ABP, processes_with, wait_status, wait_until
from tests.fixtures.funcs import ref

SPAWNER = Path(__file__).resolve().parents[1] / "fixtures" / "spawner.py"


def write_jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(n)))
    return path


def spawner_job(orch, workdir: Path, marker: str, n: int, seconds: float, **kw) -> int:  # type: ignore[no-untyped-def]
    data = write_jsonl(workdir / "items.jsonl", n)
    spec = JobSpec(name="faults", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="command",
                   worker_options={"command": f"{sys.executable} {SPAWNER} {marker} {{{{ row.id }}}} {seconds}"},
                   **kw)
    return orch.create(spec, cwd=workdir).job_id


def executor_pid(orch, job_id: int) -> int:  # type: ignore[no-untyped-def]
    return wait_until(lambda: orch.status(job_id).executor.pid if orch.status(job_id).executor.state
                      == "running" else None, what="a running executor")


def test_kill_9_then_resume_completes_every_unit_once_and_leaves_no_orphans(orch, workdir: Path) -> None:
    marker = f"abp-kill9-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=9, seconds=1.5, concurrency=3)
    orch.start(job, skip_test=True)
    pid = executor_pid(orch, job)
    wait_until(lambda: orch.status(job).completed >= 3 and len(processes_with(marker)) >= 3,
               timeout=60, what="some units done and others in flight")
    os.kill(pid, signal.SIGKILL)
    # the watchdog kills the agents' whole process groups, grandchildren included
    wait_until(lambda: not processes_with(marker), timeout=10, what="no orphan agent processes")
    status = orch.status(job)
    assert status.status == "RUNNING" and status.executor.state == "lost"  # not "stopped": it never said so
    assert status.running > 0  # units still leased by the dead executor

    orch.resume(job)  # reclaims the dead executor's units at once (no lease wait: lease is 30 s)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=90)
    assert final.status == "COMPLETED"
    assert final.completed == 9 and final.running == 0 and final.pending == 0
    rows = orch.results(job)
    assert sorted(r["output"] for r in rows) == sorted(str(i) for i in range(9))
    assert any(r["attempts"] == 2 for r in rows)  # the units that were in flight ran again
    assert any("returned to PENDING" in line.message for line in orch.logs(job, level="warning"))
    assert not processes_with(marker)


def test_sigterm_pauses_and_in_flight_units_finish(orch, workdir: Path) -> None:
    marker = f"abp-term-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=10, seconds=1.0, concurrency=2)
    orch.start(job, skip_test=True)
    pid = executor_pid(orch, job)
    wait_until(lambda: orch.status(job).completed >= 2, timeout=60, what="two units done")
    os.kill(pid, signal.SIGTERM)
    paused = wait_status(orch, job, {"PAUSED"}, timeout=30)
    assert paused.running == 0 and paused.pause_reason == "stopped"
    assert paused.completed + paused.pending == 10
    assert paused.executor.state == "stopped"
    assert not processes_with(marker)
    orch.resume(job)
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 10


def test_second_signal_cancels_in_flight_units_at_once(orch, workdir: Path) -> None:
    marker = f"abp-term2-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=4, seconds=60, concurrency=2)
    orch.start(job, skip_test=True)
    pid = executor_pid(orch, job)
    wait_until(lambda: len(processes_with(marker)) >= 2, timeout=30, what="agents running")
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    paused = wait_status(orch, job, {"PAUSED"}, timeout=15)  # well before the 10 s grace or the 60 s units
    assert paused.pending == 4 and paused.running == 0
    wait_until(lambda: not processes_with(marker), timeout=10, what="agents killed")


def test_stop_command_pauses_through_the_store(orch, workdir: Path) -> None:
    job = spawner_job(orch, workdir, f"abp-stop-{uuid.uuid4().hex[:8]}", n=6, seconds=0.5, concurrency=2)
    orch.start(job, skip_test=True)
    executor_pid(orch, job)
    orch.stop(job)
    paused = wait_status(orch, job, {"PAUSED", "COMPLETED"}, timeout=30)
    assert paused.running == 0


def test_concurrent_resumes_start_one_executor(orch, workdir: Path) -> None:
    job = spawner_job(orch, workdir, f"abp-res-{uuid.uuid4().hex[:8]}", n=6, seconds=1.0, concurrency=2)
    orch.store.jobs.update_job(job, status="PAUSED", started_at=time.time())
    results: list[subprocess.CompletedProcess[str]] = []

    def resume() -> None:
        results.append(subprocess.run([*ABP, "resume", str(job), "--json"], capture_output=True, text=True,
                                      timeout=60))

    threads = [threading.Thread(target=resume) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    pids = {json.loads(r.stdout)["executor"]["pid"] for r in results}
    assert len(pids) == 1
    assert len(orch.store.executors.list_executors(job)) == 1
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 6


def test_a_resume_that_loses_the_race_joins_the_winner(orch, workdir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic form of the race above: this resume read PAUSED, then another resume set RUNNING
    before our guarded update. It must not fail with "changed state meanwhile"."""
    job = spawner_job(orch, workdir, f"abp-race-{uuid.uuid4().hex[:8]}", n=2, seconds=0.2, concurrency=2)
    orch.store.jobs.update_job(job, status="PAUSED", started_at=time.time())
    stale = orch.job(job)
    orch.store.jobs.update_job(job, expect=["PAUSED"], status="RUNNING")  # the winner's transition
    real_job = orch.job
    reads = iter([stale])
    monkeypatch.setattr(orch, "job", lambda ref: next(reads, None) or real_job(ref))
    status = orch.resume(job)
    assert status.status in ("RUNNING", "COMPLETED")
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 2


def test_a_second_executor_on_the_same_host_exits_at_once(orch, workdir: Path) -> None:
    job = spawner_job(orch, workdir, f"abp-dup-{uuid.uuid4().hex[:8]}", n=3, seconds=2.0, concurrency=1)
    orch.start(job, skip_test=True)
    executor_pid(orch, job)
    second = subprocess.run([*ABP, "executor", str(job)], capture_output=True, text=True, timeout=30)
    assert second.returncode == 0 and "already runs" in second.stdout
    assert len(orch.store.executors.list_executors(job)) == 1


def test_hanging_unit_is_killed_with_its_children_retried_then_failed(orch, workdir: Path) -> None:
    marker = f"abp-hang-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=1, seconds=120, concurrency=1, timeout_s=1.0, max_retries=1)
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"FAILED", "COMPLETED"}, timeout=60)
    assert final.status == "FAILED"
    [row] = orch.results(job)
    assert row["attempts"] == 2 and "timed out after 1s" in row["error"] and row["error_class"] == "retryable"
    assert not processes_with(marker)


def test_executor_runs_detached_in_its_own_session(orch, workdir: Path) -> None:
    job = spawner_job(orch, workdir, f"abp-sid-{uuid.uuid4().hex[:8]}", n=2, seconds=1.0, concurrency=1)
    orch.start(job, skip_test=True)
    pid = executor_pid(orch, job)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) == pid  # session id == its own pid: setsid, no controlling terminal of ours
    assert int(stat[3]) != os.getsid(0)
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 2


@pytest.mark.parametrize("reason", ["cancel"])
def test_cancel_kills_agents_and_cancels_pending_units(orch, workdir: Path, reason: str) -> None:
    marker = f"abp-cancel-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=5, seconds=60, concurrency=2)
    orch.start(job, skip_test=True)
    wait_until(lambda: len(processes_with(marker)) >= 2, timeout=30, what="agents running")
    status = orch.cancel(job)
    assert status.status == "CANCELLED" and status.cancelled == 5
    wait_until(lambda: not processes_with(marker), timeout=15, what="agents killed")
    wait_until(lambda: orch.status(job).executor.state == "stopped", timeout=15, what="executor exit")
    assert orch.status(job).status == "CANCELLED"


def test_cancelling_one_running_unit_kills_its_agent(orch, workdir: Path) -> None:
    marker = f"abp-unit-cancel-{uuid.uuid4().hex[:8]}"
    data = write_jsonl(workdir / "items.jsonl", 3)
    spec = JobSpec(name="unit-cancel", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="command",
                   worker_options={"command": f"{sys.executable} {SPAWNER} {marker}-{{{{ row.id }}}} "
                                              f"{{{{ row.id }}}} {{{{ 60 if row.id == 0 else 1 }}}}"},
                   concurrency=3)
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    wait_until(lambda: processes_with(f"{marker}-0"), timeout=30, what="the long unit's agent")
    unit = next(u for u in orch.results(job) if u["key"] == "0")
    orch.cancel_unit(job, unit["unit"])
    wait_until(lambda: not processes_with(f"{marker}-0"), timeout=15, what="its agent to be killed")
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60)
    assert final.completed == 2 and final.cancelled == 1
    assert final.status == "CANCELLED"  # COMPLETED means every unit completed


def test_an_attempt_that_ignores_its_cancellation_does_not_keep_the_job_running(
        orch, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop with agents that swallow every cancellation: past the grace periods their units are released,
    the job is PAUSED and the executor exits (it used to wait for them forever, job RUNNING)."""
    from agentic_batch.engine.procs import process_alive

    monkeypatch.setenv("ABP_STOP_GRACE_SECONDS", "0.5")
    monkeypatch.setenv("ABP_CANCEL_GRACE_SECONDS", "1")
    data = write_jsonl(workdir / "items.jsonl", 4)
    spec = JobSpec(name="deaf", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="python",
                   worker_options={"function": ref("deaf")}, concurrency=2)
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    pid = executor_pid(orch, job)
    wait_until(lambda: orch.status(job).running == 2, timeout=60, what="two deaf units in flight")
    orch.stop(job)
    paused = wait_status(orch, job, {"PAUSED"}, timeout=60)
    assert paused.running == 0 and paused.pending == 4
    wait_until(lambda: not process_alive(pid), timeout=60, what="the executor to exit")
    logs = " ".join(row.message for row in orch.logs(job, level="debug"))
    assert "did not stop within 1s of its cancellation" in logs


def test_an_executor_starting_while_someone_looks_at_its_slot_still_works_the_job(orch, workdir: Path) -> None:
    """`holder_of` (the launcher polling for its executor, `abp status`, a resume) looks at the slot by
    holding a shared flock for an instant. An executor that tried its slot in that instant once left
    with "already runs" and code 0, the launcher trusted it, and the job stayed RUNNING with nobody
    working it (kill -9 then resume on a loaded host). Here the look lasts until the executor tried."""
    import fcntl

    from agentic_batch.engine.hostlock import lock_path

    marker = f"abp-look-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=3, seconds=0.1)
    log_path = Path(os.environ["ABP_HOME"]) / "jobs" / str(job) / "executor.log"
    fd = os.open(lock_path(Path(os.environ["ABP_HOME"]) / "run", job), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a look, frozen (a descheduled prober on a loaded host)
    starting = threading.Thread(target=orch.start, args=(job,), kwargs={"skip_test": True})
    starting.start()
    try:
        said = wait_until(lambda: log_path.exists() and next(
            (line for line in log_path.read_text().splitlines() if "is busy" in line or "already runs" in line),
            None), timeout=60, what="the executor trying its slot")
    finally:
        os.close(fd)  # the look ends
    starting.join(timeout=60)
    assert "already runs" not in said, said
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED" and final.completed == 3


def test_a_slot_held_in_the_name_of_a_dead_executor_gets_a_new_one(orch, workdir: Path) -> None:
    """After a kill -9 the slot's flock can outlive the executor for a moment (a child forked but not yet
    exec'd shares it). Its file names the dead pid: a resume must not take that for a live executor."""
    import fcntl

    from agentic_batch.engine.hostlock import lock_path

    marker = f"abp-dead-slot-{uuid.uuid4().hex[:8]}"
    job = spawner_job(orch, workdir, marker, n=3, seconds=0.1)
    log_path = Path(os.environ["ABP_HOME"]) / "jobs" / str(job) / "executor.log"
    dead = str(2**22 + 1)  # above any pid_max: a pid that is surely gone (a real dead one may be reused)
    fd = os.open(lock_path(Path(os.environ["ABP_HOME"]) / "run", job), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, in the name of a process that is gone
    os.pwrite(fd, dead.encode(), 0)
    starting = threading.Thread(target=orch.start, args=(job,), kwargs={"skip_test": True})
    starting.start()
    try:
        wait_until(lambda: log_path.exists() and f"pid {dead} is gone" in log_path.read_text(), timeout=60,
                   what="the new executor waiting for the slot")
    finally:
        os.close(fd)  # the leftover holder goes
    starting.join(timeout=60)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED" and final.completed == 3


def test_a_slot_that_stays_held_by_no_live_executor_is_said_not_trusted(orch, workdir: Path) -> None:
    """The new executor waits for the slot a while, then exits saying why: the resume fails in words and
    the job's log has them (never a RUNNING job that everyone believes someone works on)."""
    import fcntl

    from agentic_batch.engine.hostlock import lock_path
    from agentic_batch.errors import AbpError

    job = spawner_job(orch, workdir, f"abp-held-{uuid.uuid4().hex[:8]}", n=1, seconds=0.1)
    fd = os.open(lock_path(Path(os.environ["ABP_HOME"]) / "run", job), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, str(2**22 + 1).encode(), 0)  # above any pid_max: gone
    try:
        with pytest.raises(AbpError, match="held, but not by a live executor"):
            orch.start(job, skip_test=True)
    finally:
        os.close(fd)
    assert any("held, but not by a live executor" in line.message for line in orch.logs(job))
    orch.resume(job)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60).status == "COMPLETED"
