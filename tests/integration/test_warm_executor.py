"""The warm executor (engine/warm.py): started by the CLI before its own imports, handed the job by
`launch_executor` once the state checks passed, gone without a trace when nothing is launched.

Real processes throughout: the CLI as a user runs it, and `python -m agentic_batch executor --warm`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentic_batch.config import load_settings
from agentic_batch.store import open_store
from tests.fixtures.abp import abp, abp_json, processes_with, wait_until

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.name != "posix", reason="the warm executor is POSIX-only")]


def create_job(workdir: Path, *extra: str, command: str = "cat {{ path }}") -> int:
    for i in range(3):
        (workdir / f"f{i}.txt").write_text(f"item {i}\n")
    result = abp("create", "--name", "warm", "--files", "*.txt", "--command", command, *extra, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def warm_processes(home: Path) -> list[int]:
    """Warm executors of this test (their environment names this test's ABP_HOME)."""
    mine = f"ABP_HOME={home}".encode()
    found = []
    for pid in processes_with("--warm"):
        try:
            if mine in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            pass
    return found


def test_start_hands_the_job_to_the_warm_executor(workdir: Path, abp_home: Path) -> None:
    job_id = create_job(workdir, "--concurrency", "1", command="sleep 1")  # the executor lives a while
    status = abp_json("start", str(job_id), "--skip-test", cwd=workdir)
    pid = status["executor"]["pid"]
    assert f"executor --warm --job {job_id}" in cmdline(pid), "the CLI's warm executor should run the job"
    assert warm_processes(abp_home) == [pid]
    final = wait_until(lambda: (s := abp_json("status", str(job_id)))["status"] == "COMPLETED" and s,
                       what="job completed")
    assert final["completed"] == 3
    wait_until(lambda: warm_processes(abp_home) == [], timeout=15, what="the executor exited")


def test_run_creates_and_runs_through_the_warm_executor(workdir: Path, abp_home: Path) -> None:
    for i in range(3):
        (workdir / f"f{i}.txt").write_text(f"item {i}\n")
    result = abp("run", "--name", "warm-run", "--files", "*.txt", "--command", "cat {{ path }}", "--yes", "--wait",
                 cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # with --wait stdout stays clean for `abp results last`
    job_id = "last"
    rows = list(csv.DictReader(io.StringIO(abp("results", job_id, "--format", "csv").stdout)))
    assert sorted(row["output"] for row in rows) == ["item 0", "item 1", "item 2"]
    assert sorted(row["stdout"] for row in rows) == ["item 0\n", "item 1\n", "item 2\n"]  # as the command wrote it
    assert "executor started" in abp("logs", job_id).stdout
    wait_until(lambda: warm_processes(abp_home) == [], timeout=15, what="the executor exited")


def test_without_warm_executor_the_executor_is_spawned_plainly(workdir: Path, abp_home: Path) -> None:
    job_id = create_job(workdir, "--concurrency", "1")
    result = abp("start", str(job_id), "--skip-test", "--json", cwd=workdir, env={"ABP_WARM_EXECUTOR": "0"})
    assert result.returncode == 0, result.stderr
    pid = json.loads(result.stdout)["executor"]["pid"]
    assert "--warm" not in cmdline(pid)
    wait_until(lambda: abp_json("status", str(job_id))["status"] == "COMPLETED", what="job completed")


@pytest.mark.parametrize("args", [["start", "999", "--skip-test"], ["resume", "999"], ["retry", "abc"]])
def test_a_refused_command_leaves_no_warm_executor(workdir: Path, abp_home: Path, args: list[str]) -> None:
    result = abp(*args, cwd=workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    wait_until(lambda: warm_processes(abp_home) == [], timeout=15, what="the warm executor exited")
    assert not (abp_home / "run").exists() or not list((abp_home / "run").glob("job-*.lock*"))


def test_an_illegal_start_launches_nothing(workdir: Path, abp_home: Path) -> None:
    job_id = create_job(workdir)
    assert abp("cancel", str(job_id), cwd=workdir).returncode == 0
    result = abp("start", str(job_id), "--skip-test", cwd=workdir)
    assert result.returncode == 1 and "error:" in result.stderr
    wait_until(lambda: warm_processes(abp_home) == [], timeout=15, what="the warm executor exited")
    store = open_store(load_settings().db_url)
    assert store.jobs.get_job(job_id).status == "CANCELLED"
    assert store.executors.list_executors(job_id) == []


def spawn_warm(*extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "agentic_batch", "executor", "--warm", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_eof_ends_a_warm_executor_even_during_its_imports(workdir: Path) -> None:
    job_id = create_job(workdir)
    proc = spawn_warm("--job", str(job_id), "--worker", "command")
    assert proc.stdin is not None
    proc.stdin.close()  # at once: the process is still importing
    started = time.monotonic()
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 30
    store = open_store(load_settings().db_url)
    assert store.jobs.get_job(job_id).status == "CREATED"
    assert store.executors.list_executors(job_id) == []


def test_a_handed_over_executor_writes_to_the_job_log_and_works_in_its_directory(workdir: Path,
                                                                                 tmp_path: Path) -> None:
    job_id = create_job(workdir)  # CREATED: the executor refuses it and says why, in the log
    log = tmp_path / "executor.log"
    proc = spawn_warm("--job", str(job_id))
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"job_id": job_id, "join": False, "cwd": str(workdir), "log": str(log)}).encode()
                     + b"\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 1
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read() == b"" and proc.stderr.read() == b"", "after the hand-over, output belongs in the log"
    assert f"job {job_id} is CREATED, not RUNNING" in log.read_text()
