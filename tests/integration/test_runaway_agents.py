"""Agents that misbehave around their unit, with real executors and real processes: a grandchild
that leaves its session, a child that keeps the command's stdout open, a 2 MiB output line."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentic_batch.engine import cgroups
from agentic_batch.engine.procs import process_table
from agentic_batch.spec import JobSpec
from tests.fixtures.abp import processes_with, wait_status, wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ESCAPER = FIXTURES / "escaper.py"


def _cgroups_work() -> bool:
    parent = cgroups.own_cgroup()
    if parent is None:
        return False
    probe = parent / f"abp-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


@pytest.fixture(params=["cgroup", "subreaper"])
def tracking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of tracking descendants: a cgroup per unit (where the host lets us) and the fallback."""
    if request.param == "cgroup":
        if not _cgroups_work():
            pytest.skip("this host does not let us create a cgroup v2 below our own")
        monkeypatch.setenv("ABP_PROCESS_CGROUPS", "1")
    else:
        monkeypatch.setenv("ABP_PROCESS_CGROUPS", "0")
    return str(request.param)


def command_job(orch, workdir: Path, command: str, n: int = 1, **kw) -> int:  # type: ignore[no-untyped-def]
    data = workdir / "items.jsonl"
    data.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    spec = JobSpec(name="runaway", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="command",
                   worker_options={"command": command}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def executor_cgroup(job_id: int, tracking: str) -> Path | None:
    """The cgroup the job's executor made (from its log line), None in the fallback."""
    if tracking != "cgroup":
        return None
    from agentic_batch.config import load_settings
    from agentic_batch.engine.launch import executor_log_path

    log = executor_log_path(load_settings(), job_id)
    found = wait_until(lambda: re.search(r"tracked by cgroup (\S+)", log.read_text() if log.exists() else ""),
                       timeout=30, what="the executor's cgroup in its log")
    return Path(found.group(1))


def test_a_grandchild_that_leaves_its_session_dies_with_its_unit(orch, workdir: Path, tracking: str) -> None:
    marker = f"abp-esc-{uuid.uuid4().hex[:8]}"
    job = command_job(orch, workdir, f"{sys.executable} {ESCAPER} {marker} {workdir}/out-{{{{ row.id }}}} 2",
                      n=3, concurrency=3)
    orch.start(job, skip_test=True)
    cgroup = executor_cgroup(job, tracking)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED" and final.completed == 3
    assert sorted(r["output"] for r in orch.results(job)) == ["done"] * 3
    wait_until(lambda: not processes_with(marker), timeout=10, what="the escaped grandchildren to be killed")
    time.sleep(3)  # past the moment they would have written their files
    assert not list(workdir.glob("out-*"))
    wait_until(lambda: orch.status(job).executor.state == "stopped", timeout=15, what="executor exit")
    if cgroup is not None:
        wait_until(lambda: not cgroup.exists(), timeout=10, what="the executor's cgroups removed")


def test_a_grandchild_that_leaves_its_session_dies_with_a_killed_executor(orch, workdir: Path,
                                                                          tracking: str) -> None:
    marker = f"abp-esc9-{uuid.uuid4().hex[:8]}"
    job = command_job(orch, workdir, f"{sys.executable} {ESCAPER} {marker} {workdir}/out-{{{{ row.id }}}} 3 60",
                      n=2, concurrency=2)
    orch.start(job, skip_test=True)
    cgroup = executor_cgroup(job, tracking)
    wait_until(lambda: len(processes_with(f"{marker}-escapee")) == 2, timeout=30, what="two escaped grandchildren")
    pid = orch.status(job).executor.pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes_with(marker), timeout=10, what="every agent process killed by the watchdog")
    time.sleep(3.5)
    assert not list(workdir.glob("out-*"))
    if cgroup is not None:
        wait_until(lambda: not cgroup.exists(), timeout=10, what="the watchdog removed the cgroups")


@pytest.mark.slow
def test_a_grandchild_that_also_clears_its_environment(orch, workdir: Path, tracking: str) -> None:
    """What the README says is out of reach: with a cgroup it dies with its unit; in the fallback
    (no token to trace) it dies when the executor exits, not later."""
    marker = f"abp-escenv-{uuid.uuid4().hex[:8]}"
    job = command_job(orch, workdir, f"{sys.executable} {ESCAPER} {marker}-{{{{ row.id }}}} "
                                     f"{workdir}/out-{{{{ row.id }}}} 20 {{{{ 0 if row.id == 0 else 6 }}}} clearenv",
                      n=2, concurrency=2)
    orch.start(job, skip_test=True)
    wait_until(lambda: orch.status(job).completed >= 1, timeout=30, what="unit 0 completed")
    if tracking == "cgroup":  # while unit 1 still runs, unit 0's escapee is already gone
        wait_until(lambda: not processes_with(f"{marker}-0-escapee"), timeout=10, what="its escapee killed")
        assert orch.status(job).status == "RUNNING"
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED"
    wait_until(lambda: orch.status(job).executor.state == "stopped", timeout=15, what="executor exit")
    wait_until(lambda: not processes_with(marker), timeout=10, what="no escapee once the executor is gone")
    time.sleep(1)
    assert not list(workdir.glob("out-*"))


def test_a_grandchild_that_leaves_its_session_dies_with_the_test_unit(orch, workdir: Path, tracking: str) -> None:
    """The test-first run goes through the same tracking, in the calling process (no subreaper there)."""
    marker = f"abp-esct-{uuid.uuid4().hex[:8]}"
    job = command_job(orch, workdir, f"{sys.executable} {ESCAPER} {marker} {workdir}/out-{{{{ row.id }}}} 2")
    report = orch.test(job)
    assert report.output == "done", report
    wait_until(lambda: not processes_with(marker), timeout=10, what="the escaped grandchild to be killed")
    time.sleep(2.5)
    assert not list(workdir.glob("out-*"))


def test_the_fallback_reaps_orphans_it_adopted(orch, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cgroups the executor is a subreaper: orphans that exit by themselves must not pile up
    as its zombies (each would hold a pid until the executor exits)."""
    monkeypatch.setenv("ABP_PROCESS_CGROUPS", "0")
    script = workdir / "orphan.sh"
    script.write_text('(sleep 0.1) >/dev/null 2>&1 &\nif [ "$1" = 7 ]; then sleep 30; fi\necho ok\n')
    job = command_job(orch, workdir, f"sh {script} {{{{ row.id }}}}", n=8, concurrency=4)
    orch.start(job, skip_test=True)
    pid = wait_until(lambda: orch.status(job).executor.pid, what="an executor")
    wait_until(lambda: orch.status(job).completed == 7, timeout=60, what="seven short units")

    def zombies() -> list[int]:
        table = process_table()
        return [p for p, (ppid, _, state) in table.items() if ppid == pid and state == "Z"]

    wait_until(lambda: not zombies(), timeout=20, what="the adopted orphans reaped")
    orch.cancel(job)


def test_a_command_whose_child_keeps_stdout_open_completes_when_the_command_exits(orch, workdir: Path) -> None:
    marker = f"abp-open-{uuid.uuid4().hex[:8]}"
    script = workdir / "bg.sh"
    script.write_text(f"{sys.executable} -c 'import time; time.sleep(100)' {marker} &\necho done\n")
    job = command_job(orch, workdir, f"sh {script}", n=2, timeout_s=20, max_retries=0)
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    rows = orch.results(job)
    assert final.status == "COMPLETED", rows
    assert [(r["output"], r["attempts"]) for r in rows] == [("done", 1), ("done", 1)]
    assert not processes_with(marker)  # the background child was killed after the drain grace
    warnings = [e for e in orch.events(job, rows[0]["unit"]) if e.kind == "warning"]
    assert warnings and "kept its output open" in warnings[0].data["message"]


def test_a_2_mib_output_line_completes_with_the_whole_line(orch, workdir: Path) -> None:
    size = 2 * 1024 * 1024
    job = command_job(orch, workdir, f"{sys.executable} -c \"import sys; sys.stdout.write('x' * {size} + '\\n')\"")
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    [row] = orch.results(job)
    assert final.status == "COMPLETED", row["error"]
    assert row["output"] == "x" * size
    stdout_events = [e for e in orch.events(job, row["unit"]) if e.kind == "stdout"]
    assert len(stdout_events) == 1 and len(stdout_events[0].data["text"]) < 5000  # the event shows its start


def test_output_capture_keeps_head_and_tail_under_a_cap_and_spills_the_rest(tmp_path: Path) -> None:
    from agentic_batch.workers.command import OutputCapture

    spill = tmp_path / "outputs" / "1-1.txt"
    capture = OutputCapture(10, spill)
    for chunk in (b"abc", b"defghij", b"klmnopqrstu", b"vwxyz"):
        capture.add(chunk)
    assert capture.total == 26 and len(capture.head) + len(capture.tail) == 10
    assert capture.text() == f"abcde\n… [16 bytes cut; full output in {spill}] …\nvwxyz"
    assert spill.read_bytes() == b"abcdefghijklmnopqrstuvwxyz"
    small = OutputCapture(10, tmp_path / "never.txt")
    small.add(b"0123456789")
    assert small.text() == "0123456789" and not (tmp_path / "never.txt").exists()
    whole = OutputCapture(None)
    whole.add(b"x" * 100)
    assert whole.text() == "x" * 100


def python_job(orch, workdir: Path, function: str, rows: list[dict], **kw) -> int:  # type: ignore[no-untyped-def, type-arg]
    from tests.fixtures.funcs import ref

    data = workdir / "items.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    isolate = kw.pop("isolate", False)
    spec = JobSpec(name="python", source={"kind": "jsonl", "path": str(data), "key": "id"}, worker="python",
                   worker_options={"function": ref(function), "isolate_python": isolate}, **kw)
    return orch.create(spec, cwd=workdir).job_id


def runlog(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_a_sync_function_past_its_timeout_is_abandoned_and_the_executor_still_exits(
        orch, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentic_batch.engine.procs import process_alive
    from agentic_batch.workers.python_fn import ABANDONED

    monkeypatch.setenv("ABP_TEST_FLAG", str(workdir / "woke"))
    job = python_job(orch, workdir, "stubborn", [{"id": 0, "sleep": 120}], timeout_s=1, max_retries=1)
    orch.start(job, skip_test=True)
    first = wait_until(lambda: orch.status(job).executor.pid, what="an executor")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    [row] = orch.results(job)
    assert final.status == "FAILED" and row["attempts"] == 2
    assert row["error"] == ABANDONED and row["error_class"] == "retryable"
    # its two threads still sleep, but the executor wrote the final status, released the host lock and left
    wait_until(lambda: not process_alive(first), timeout=60, what="the executor to exit")
    assert orch.status(job).executor.state == "stopped"

    orch.retry(job)  # a new executor takes the unit: nothing holds the host lock
    wait_until(lambda: orch.status(job).executor.pid not in (None, first), timeout=30, what="a new executor")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    [row] = orch.results(job)
    assert final.status == "FAILED" and row["attempts"] == 4 and row["error"] == ABANDONED
    assert not (workdir / "woke").exists()


def test_isolate_python_kills_the_function_and_what_it_started_on_timeout(
        orch, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentic_batch.engine.procs import process_alive

    marker = f"abp-iso-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ABP_TEST_RUNLOG", str(workdir / "runlog"))
    job = python_job(orch, workdir, "stubborn_with_child", [{"id": 0, "sleep": 120, "marker": marker}],
                     timeout_s=3, max_retries=0, isolate=True)
    orch.start(job, skip_test=True)
    executor = wait_until(lambda: orch.status(job).executor.pid, what="an executor")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    [row] = orch.results(job)
    assert final.status == "FAILED" and "timed out after 3s" in row["error"]
    [started] = runlog(workdir / "runlog")
    assert started["pid"] != executor  # it ran in a host process ...
    wait_until(lambda: not process_alive(started["pid"]), timeout=10, what="the host process killed")
    wait_until(lambda: not processes_with(marker), timeout=10, what="the process it started killed")


def test_isolate_python_runs_calls_in_reused_host_processes(orch, workdir: Path) -> None:
    rows = [{"id": i} for i in range(6)] + [{"id": 6, "fail": True}]
    job = python_job(orch, workdir, "pid_and_emit", rows, concurrency=2, isolate=True, max_retries=0,
                     prompt="p{{ row.id }}")
    orch.start(job, skip_test=True)
    executor = wait_until(lambda: orch.status(job).executor.pid, what="an executor")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    results = {r["key"]: r for r in orch.results(job)}
    assert final.status == "FAILED" and final.completed == 6
    assert results["6"]["error"] == "asked to fail" and results["6"]["error_class"] == "permanent"
    data = [json.loads(results[str(i)]["output"]) for i in range(6)]
    assert [(d["key"], d["prompt"]) for d in data] == [(str(i), f"p{i}") for i in range(6)]
    pids = {d["pid"] for d in data}
    assert executor not in pids and len(pids) <= 3  # a small pool, reused
    events = orch.events(job, results["0"]["unit"])
    assert any(e.kind == "progress" and e.data == {"unit": "0"} for e in events)
