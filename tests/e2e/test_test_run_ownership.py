"""A test run cut off by its client: `abp start JOB` as a real subprocess, signalled mid-test.

The test unit is a command that notes that it started, then sleeps until a `go` file exists: so the
test knows when the unit is mid-run, and the next start's run of it finishes at once.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import ABP, abp, processes_with, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

#: Sleeps with a marker in its argv so the test can find (and count) the agent process.
SCRIPT = 'echo "$1" >> started.log; [ -e go ] || exec sleep 3600{{ "" }}7; echo "done $1"'


def make_job(workdir: Path, orch: Orchestrator) -> int:
    (workdir / "rows.csv").write_text("id\n1\n2\n")
    created = abp("create", "--name", "slow-test", "--csv", "rows.csv", "--key", "id", "--command",
                  f"sh -c '{SCRIPT}' sh {{{{ id }}}}", cwd=workdir)
    assert created.returncode == 0, created.stderr
    return int(created.stdout.strip())


def start_in_background(workdir: Path, job: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*ABP, "start", str(job)], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: (workdir / "started.log").exists(), timeout=30, what="the test unit to start")
    return proc


def agents() -> list[int]:
    return processes_with("sleep 36007")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_test_gives_the_unit_back_and_the_next_start_tests_again(sig: signal.Signals, workdir: Path,
                                                                            orch: Orchestrator) -> None:
    job = make_job(workdir, orch)
    first = start_in_background(workdir, job)
    assert orch.status(job).status == "TESTING" and agents()

    busy = abp("start", str(job), cwd=workdir)  # a start while the test runs in a live process
    lines = busy.stderr.strip().splitlines()
    assert busy.returncode == 1 and len(lines) == 1, busy.stderr
    assert f"job {job} is being tested right now" in lines[0] and f"pid {first.pid}" in lines[0]
    status = orch.status(job)
    assert status.executor.pid == first.pid and status.executor.state == "running"

    first.send_signal(sig)  # SIGTERM: Claude Code or a supervisor ending it; SIGINT: Ctrl-C
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert f"interrupted by {sig.name}" in stderr and "Traceback" not in stderr
    status = orch.status(job)
    assert (status.status, status.running, status.pending) == ("CREATED", 0, 2)
    wait_until(lambda: not agents(), timeout=10, what="the test unit's agent to be killed")

    (workdir / "go").touch()
    again = abp("start", str(job), cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "done 1" in again.stdout and "Approve the full run" in again.stderr
    report = orch.test_report(job)
    assert (report.status, report.attempts) == ("COMPLETED", 2)
    assert any(f"interrupted by {sig.name}" in r.message for r in orch.logs(job, level="warning"))


def test_kill_9_mid_test_is_reclaimed_by_the_next_start(workdir: Path, orch: Orchestrator) -> None:
    job = make_job(workdir, orch)
    first = start_in_background(workdir, job)
    first.kill()
    first.wait(timeout=10)
    status = orch.status(job)  # nobody gave it back: what a killed client leaves behind
    assert (status.status, status.running) == ("TESTING", 1)
    assert status.executor.state != "running"

    (workdir / "go").touch()
    again = abp("start", str(job), cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "done 1" in again.stdout
    report = orch.test_report(job)
    assert (report.status, report.attempts, report.output.strip()) == ("COMPLETED", 2, "done 1")
    warnings = [r.message for r in orch.logs(job, level="warning")]
    assert any(f"pid {first.pid}" in m and "ended without a result" in m for m in warnings), warnings
    approved = abp("start", str(job), "--approve", cwd=workdir)
    assert approved.returncode == 0, approved.stderr
    wait_until(lambda: orch.status(job).status == "COMPLETED", timeout=30, what="the job to complete")
    for pid in agents():  # the killed client's agent may outlive it (not this test's subject)
        subprocess.run(["kill", "-9", str(pid)], check=False)


def test_an_expired_lease_is_reclaimed_and_the_stale_owner_cannot_undo_it(workdir: Path, orch: Orchestrator,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_LEASE_SECONDS", "1")
    job = make_job(workdir, orch)
    first = start_in_background(workdir, job)
    stop_outside_a_write(first, orch)  # alive, but no heartbeat: its lease runs out
    try:
        time.sleep(1.5)
        (workdir / "go").touch()
        again = abp("start", str(job), cwd=workdir)
        assert again.returncode == 0, again.stderr
        assert orch.test_report(job).status == "COMPLETED"
    finally:
        first.send_signal(signal.SIGCONT)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    status = orch.status(job)
    assert (status.status, status.completed, status.pending) == ("TESTING", 1, 1)
    for pid in agents():
        subprocess.run(["kill", "-9", str(pid)], check=False)


def stop_outside_a_write(proc: subprocess.Popen[str], orch: Orchestrator) -> None:
    """SIGSTOP the process, but not while it holds SQLite's write lock (a heartbeat): a stopped lock
    holder would block every other process, which is SQLite's limit, not what this test is about."""
    db = orch.settings.db_url.removeprefix("sqlite:///")
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        try:
            with sqlite3.connect(db, timeout=0.2) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.rollback()
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError("could not stop the test run outside a write")


def test_start_on_a_failed_test_exits_non_zero_and_says_so(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "rows.csv").write_text("id\n1\n2\n")
    created = abp("create", "--name", "fails", "--csv", "rows.csv", "--key", "id", "--max-retries", "0",
                  "--command", "sh -c 'echo broken >&2; exit 3'", cwd=workdir)
    job = created.stdout.strip()
    tested = abp("start", job, cwd=workdir)
    assert tested.returncode == 1, tested.stderr
    assert f"The test unit of job {job} failed" in tested.stderr and "Approve the full run" not in tested.stderr
    shown = abp("start", job, cwd=workdir)  # the waiting (failed) result, shown again
    assert shown.returncode == 1 and "failed" in shown.stderr

    stopped = abp("run", "--name", "fails2", "--csv", "rows.csv", "--key", "id", "--max-retries", "0",
                  "--command", "sh -c 'exit 3'", "--yes", cwd=workdir)
    assert stopped.returncode == 1, stopped.stderr
    assert "--force" in stopped.stderr
    assert orch.status("fails2").status == "TESTING" and stopped.stdout.strip() == str(orch.job("fails2").id)

    asked = abp("run", "--name", "fails4", "--csv", "rows.csv", "--key", "id", "--max-retries", "0",
                "--command", "sh -c 'exit 3'", cwd=workdir)  # no --yes, no terminal to ask on
    assert asked.returncode == 1 and "failed" in asked.stderr, asked.stderr
    assert orch.status("fails4").status == "TESTING"

    forced = abp("run", "--name", "fails3", "--csv", "rows.csv", "--key", "id", "--max-retries", "0",
                 "--command", "sh -c 'exit 3'", "--yes", "--force", "--wait", cwd=workdir)
    assert orch.status("fails3").status == "FAILED" and forced.returncode == 1
