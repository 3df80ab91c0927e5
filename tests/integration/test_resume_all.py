"""`abp resume --all` (and its REST and MCP faces): after every executor of three RUNNING jobs is
killed with kill -9 (what a reboot does to them), one call puts an executor back on each, and all
three complete. A job whose executor is alive is left alone and reported as running."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from agentic_batch.spec import JobSpec
from agentic_batch.web.app import create_app
from agentic_batch.web.config import WebConfig
from agentic_batch.web.server import serve_in_thread
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.funcs import ref

pytestmark = pytest.mark.timeout(180)


def slow_job(orch, workdir: Path, name: str, n: int = 6, sleep: float = 0.6,  # type: ignore[no-untyped-def]
             gate: Path | None = None) -> int:
    """A started job of `n` units; with `gate`, no unit finishes before the file `gate` exists."""
    path = workdir / f"{name}.jsonl"
    rows = [{"id": i, "sleep": sleep, **({"gate": str(gate)} if gate else {})} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = JobSpec(name=name, source={"kind": "jsonl", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref("gated" if gate else "slow")}, concurrency=2)
    job_id = orch.create(spec, cwd=workdir).job_id
    orch.start(job_id, skip_test=True)
    return job_id


def running_pid(orch, job_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(wait_until(lambda: orch.status(job_id).executor.pid
                          if orch.status(job_id).executor.state == "running" else None, what="a running executor"))


def test_resume_all_after_every_executor_is_killed(orch, workdir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    pids: dict[int, int] = {}
    for i in range(3):
        job = slow_job(orch, workdir, f"reboot-{i}", n=10, gate=gate)
        pids[job] = running_pid(orch, job)
    jobs = list(pids)
    wait_until(lambda: all(orch.status(j).running > 0 for j in jobs), timeout=30, what="units in flight")
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(orch.status(j).executor.state == "lost" for j in jobs), timeout=15, what="lost executors")
    assert all(orch.status(j).status == "RUNNING" for j in jobs)

    result = abp("resume", "--all", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["resumed"], report["running"], report["skipped"]) == (3, 0, 0)
    assert [row["job_id"] for row in report["jobs"]] == sorted(jobs)
    assert all(row["outcome"] == "resumed" and row["pid"] not in pids.values() for row in report["jobs"])
    gate.write_text("")

    for job in jobs:
        final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED"}, timeout=120)
        assert final.status == "COMPLETED" and final.completed == 10, final
        assert any("returned to PENDING" in line.message for line in orch.logs(job, level="warning"))

    again = abp("resume", "--all", cwd=workdir)  # nothing RUNNING any more
    assert again.returncode == 0 and "no RUNNING jobs" in again.stdout


def test_a_live_executor_is_left_alone_and_a_dead_one_resumed(orch, workdir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    alive = slow_job(orch, workdir, "alive", n=10, gate=gate)
    alive_pid = running_pid(orch, alive)
    dead = slow_job(orch, workdir, "dead", n=8, gate=gate)
    os.kill(running_pid(orch, dead), signal.SIGKILL)
    wait_until(lambda: orch.status(dead).executor.state == "lost", timeout=15, what="a lost executor")

    result = abp("resume", "--all", cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"job {alive} alive: still running (executor pid {alive_pid})") for line in lines)
    assert any(line.startswith(f"job {dead} dead: resumed (executor pid ") for line in lines)
    assert lines[-1] == "1 resumed, 1 still running, 0 skipped"
    assert orch.status(alive).executor.pid == alive_pid  # not a second executor
    gate.write_text("")
    assert wait_status(orch, dead, {"COMPLETED"}, timeout=60).completed == 8
    assert wait_status(orch, alive, {"COMPLETED"}, timeout=60).completed == 10


def test_resume_all_through_rest(orch, workdir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = slow_job(orch, workdir, "rest", n=8, gate=gate)
    os.kill(running_pid(orch, job), signal.SIGKILL)
    wait_until(lambda: orch.status(job).executor.state == "lost", timeout=15, what="a lost executor")
    with serve_in_thread(create_app(orch, WebConfig(cwd=workdir))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post("/api/resume-all", json={})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["resumed"] == 1 and body["jobs"][0]["outcome"] == "resumed"
        refused = client.get("/api/resume-all")
        assert refused.status_code == 405 and refused.headers["allow"] == "POST"
        assert client.post("/api/resume-all", content=b"x",
                           headers={"content-type": "text/plain"}).status_code == 403  # cross-site form
    gate.write_text("")
    assert wait_status(orch, job, {"COMPLETED"}, timeout=60).completed == 8


def test_resume_all_bad_input_on_the_cli(workdir: Path) -> None:
    both = abp("resume", "3", "--all")
    assert both.returncode == 1 and both.stderr.strip() == "error: give JOB or --all, not both"
    neither = abp("resume")
    assert neither.returncode == 1 and "give a JOB to resume, or --all" in neither.stderr
    extra = abp("resume", "--all", "--executors", "2")
    assert extra.returncode == 1 and "apply to one JOB, not to --all" in extra.stderr
    assert "Traceback" not in both.stderr + neither.stderr + extra.stderr
