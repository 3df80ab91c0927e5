"""The executor waits out an unavailable store: a private PostgreSQL cluster stopped and started (or
restarted) under a running job, and a SQLite lock held past the busy timeout. Real detached executors,
real command units, a real server; nothing is mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.pg_cluster import PgCluster, pg_cluster, pg_cluster_url  # noqa: F401 (fixtures)

SLEEPER = Path(__file__).resolve().parents[1] / "fixtures" / "sleeper.py"


def sleeper_job(orch: Any, workdir: Path, n: int, seconds: float, concurrency: int, gate: Path | None = None) -> int:
    data = workdir / "items.jsonl"
    data.write_text("".join(f'{{"id": {i}}}\n' for i in range(n)))
    command = f"{sys.executable} {SLEEPER} {{{{ row.id }}}} {seconds}" + (f" {gate}" if gate else "")
    spec = JobSpec(name="outage", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="command",
                   worker_options={"command": command}, concurrency=concurrency, max_retries=0)
    return orch.create(spec, cwd=workdir).job_id


def executor_log(home: Path, job: int) -> str:
    path = home / "jobs" / str(job) / "executor.log"
    return path.read_text(errors="replace") if path.exists() else ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def running_executor(orch: Any, job: int) -> int:
    return wait_until(lambda: orch.status(job).executor.pid if orch.status(job).executor.state
                      == "running" else None, what="a running executor")


def assert_each_unit_completed_once(orch: Any, job: int, n: int, reruns_allowed: bool = False) -> None:
    rows = orch.results(job)
    assert sorted(int(r["output"]) for r in rows) == list(range(n))
    assert all(r["status"] == "COMPLETED" for r in rows)
    if not reruns_allowed:
        assert all(r["attempts"] == 1 for r in rows), [r for r in rows if r["attempts"] != 1]


@pytest.fixture
def pg_orch(pg_cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    from agentic_batch.service import Orchestrator

    monkeypatch.setenv("ABP_DB_URL", pg_cluster_url)
    orchestrator = Orchestrator()
    yield orchestrator
    orchestrator.store.close()


def running_executors(orch: Any, job: int, n: int) -> list[int]:
    def pids() -> list[int] | None:
        found = [e.pid for e in orch.status(job).executor.executors if e.state == "running"]
        return found if len(found) == n else None

    return wait_until(pids, timeout=60, what=f"{n} running executors")


@pytest.mark.slow
@pytest.mark.parametrize("executors", [1, 3])
def test_postgres_outage_mid_run_is_waited_out_and_every_unit_completes_once(
        pg_cluster: PgCluster, pg_orch: Any, workdir: Path, abp_home: Path, executors: int) -> None:  # noqa: F811
    orch = pg_orch
    job = sleeper_job(orch, workdir, n=60, seconds=0.3, concurrency=4)
    orch.start(job, skip_test=True, executors=executors)
    pids = running_executors(orch, job, executors)
    wait_until(lambda: orch.status(job).completed >= 8, timeout=60, what="some units done")
    pg_cluster.stop()
    time.sleep(9)  # executors used to die within ~5 s of their first failed store call
    assert all(alive(pid) for pid in pids), f"an executor died during the outage:\n{executor_log(abp_home, job)}"
    pg_cluster.start()
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=120)
    assert final.status == "COMPLETED", executor_log(abp_home, job)
    assert final.completed == 60 and final.running == 0
    assert_each_unit_completed_once(orch, job, 60)
    text = executor_log(abp_home, job)
    assert "store unreachable" in text and "store back after" in text
    assert any("store unreachable for" in line.message and "resumed" in line.message
               for line in orch.logs(job, level="warning"))


@pytest.mark.slow
def test_postgres_outage_longer_than_the_lease_with_three_executors(
        pg_cluster: PgCluster, pg_orch: Any, workdir: Path, abp_home: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases expire during the outage; on recovery each executor renews its own first, and any result
    whose lease another executor took meanwhile is refused by the fence (and logged): still no unit is
    lost or completed twice."""
    monkeypatch.setenv("ABP_LEASE_SECONDS", "2")
    orch = pg_orch
    # Enough work (~10 s at concurrency 6) that no executor runs out of units before the outage on a
    # loaded host: an executor with nothing left to claim exits, and the test would see it as gone.
    job = sleeper_job(orch, workdir, n=60, seconds=1.0, concurrency=6)
    orch.start(job, skip_test=True, executors=3)
    pids = running_executors(orch, job, 3)
    wait_until(lambda: orch.status(job).completed >= 6, timeout=60, what="some units done")
    pg_cluster.stop()
    time.sleep(6)  # three leases long
    assert all(alive(pid) for pid in pids), executor_log(abp_home, job)
    pg_cluster.start()
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=120)
    assert final.status == "COMPLETED", executor_log(abp_home, job)
    assert final.completed == 60 and final.running == 0
    assert_each_unit_completed_once(orch, job, 60, reruns_allowed=True)


def test_postgres_quick_restarts_under_a_running_job(pg_cluster: PgCluster, pg_orch: Any,  # noqa: F811
                                                     workdir: Path, abp_home: Path) -> None:
    orch = pg_orch
    job = sleeper_job(orch, workdir, n=40, seconds=0.2, concurrency=4)
    orch.start(job, skip_test=True)
    pid = running_executor(orch, job)
    for done in (5, 15):
        wait_until(lambda: orch.status(job).completed >= done, timeout=60, what=f"{done} units done")  # noqa: B023
        pg_cluster.restart()  # well under a second; every connection is terminated
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=120)
    assert final.status == "COMPLETED", executor_log(abp_home, job)
    assert_each_unit_completed_once(orch, job, 40)
    assert not alive(pid) or orch.status(job).executor.pid == pid


@pytest.mark.slow
def test_postgres_outage_past_the_window_pauses_the_job_with_reason_store(
        pg_cluster: PgCluster, pg_orch: Any, workdir: Path, abp_home: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_STORE_OUTAGE_SECONDS", "3")
    orch = pg_orch
    gate = workdir / "gate"
    job = sleeper_job(orch, workdir, n=12, seconds=0.1, concurrency=3, gate=gate)
    orch.start(job, skip_test=True)
    pid = running_executor(orch, job)
    wait_until(lambda: orch.status(job).running == 3, timeout=60, what="three units in flight")
    pg_cluster.stop()
    wait_until(lambda: "giving up" in executor_log(abp_home, job), timeout=60, what="the executor giving up")
    pg_cluster.start()  # back within the executor's last attempt to record the pause
    wait_until(lambda: not alive(pid), timeout=60, what="the executor to exit")
    paused = wait_status(orch, job, {"PAUSED"}, timeout=10)
    assert paused.pause_reason == "store" and paused.running == 0
    errors = [line.message for line in orch.logs(job, level="error")]
    assert any("store unreachable for" in m and "abp resume" in m for m in errors), errors
    assert "could not record the pause" not in executor_log(abp_home, job)

    gate.touch()
    orch.resume(job)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED"
    assert_each_unit_completed_once(orch, job, 12, reruns_allowed=True)


@pytest.mark.slow
def test_postgres_still_down_after_giving_up_the_executor_exits_and_resume_finishes(
        pg_cluster: PgCluster, pg_orch: Any, workdir: Path, abp_home: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_STORE_OUTAGE_SECONDS", "2")
    orch = pg_orch
    gate = workdir / "gate"
    job = sleeper_job(orch, workdir, n=6, seconds=0.1, concurrency=3, gate=gate)
    orch.start(job, skip_test=True)
    pid = running_executor(orch, job)
    wait_until(lambda: orch.status(job).running == 3, timeout=60, what="three units in flight")
    pg_cluster.stop()
    wait_until(lambda: not alive(pid), timeout=60, what="the executor to give up and exit")
    text = executor_log(abp_home, job)
    assert "giving up" in text and "could not record the pause either" in text and f"abp resume {job}" in text
    pg_cluster.start()
    status = orch.status(job)
    assert status.status == "RUNNING" and status.running == 3  # nobody works it: resume takes it back
    assert status.executor.state == "lost"  # not "stopped": its exit recorded nothing the user can act on
    gate.touch()
    orch.resume(job)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED"
    assert_each_unit_completed_once(orch, job, 6, reruns_allowed=True)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_sqlite_lock_held_past_the_busy_timeout_is_waited_out(orch: Any, workdir: Path, abp_home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_SQLITE_BUSY_SECONDS", "0.5")
    job = sleeper_job(orch, workdir, n=30, seconds=0.2, concurrency=3)
    orch.start(job, skip_test=True)
    pid = running_executor(orch, job)
    wait_until(lambda: orch.status(job).completed >= 5, timeout=60, what="some units done")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(abp_home / "batch.db"), "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
    assert alive(pid) or orch.status(job).status == "COMPLETED", executor_log(abp_home, job)
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=120)
    assert final.status == "COMPLETED", executor_log(abp_home, job)
    assert_each_unit_completed_once(orch, job, 30)
    assert "store locked" in executor_log(abp_home, job)

