"""Whole jobs run by the real Claude Code CLI (bundled in claude-agent-sdk) through the real engine:
detached executor, store, retries, budget and quota, against a scripted model server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.spec import JobSpec
from agentic_batch.testing.anthropic_replies import Reply
from agentic_batch.testing.anthropic_scripts import MessagesRequest
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.claude_env import needs_claude_cli, offline_claude  # noqa: F401  (fixture)

pytestmark = needs_claude_cli

FILE = re.compile(r"FILE=(\S+)")


def summary_writer(latency: float = 0.0):  # type: ignore[no-untyped-def]
    """Turn 0: Write <file>.summary next to the file named in the prompt; turn 1: report (after `latency`)."""

    def respond(req: MessagesRequest) -> Reply:
        match = FILE.search(req.first_user_text)
        path = match.group(1) if match else "unknown"
        if req.turn == 0:
            content = f"summary of {Path(path).name}\n"
            return Reply.tool_use("Write", {"file_path": f"{path}.summary", "content": content},
                                  usage=(1200, 80))
        return Reply.text(f"Wrote {Path(path).name}.summary", usage=(1500, 40), latency=latency or None)

    return respond


def file_job(orch, root: Path, n: int, **kw: Any) -> int:  # type: ignore[no-untyped-def]
    for i in range(n):
        (root / f"doc{i}.md").write_text(f"# Document {i}\n\nSome text.\n")
    spec = JobSpec(name="claude-files", source={"kind": "files", "glob": "*.md", "root": str(root)},
                   prompt="Summarise the file. FILE={{ path }}", worker="claude",
                   worker_options={"model": "claude-sonnet-4-5", "max_turns": 4}, **kw)
    return orch.create(spec, cwd=root).job_id


def claude_processes_in(directory: Path) -> list[int]:
    """Live `claude` processes whose cwd is inside `directory` (the CLI runs in the unit's directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cwd.startswith(str(directory)) and b"claude" in cmdline and state != "Z":
                found.append(int(entry))
    return found


def test_file_job_writes_real_files_and_streams_the_conversation(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    offline_claude(summary_writer(latency=2.5))
    job = file_job(orch, workdir, 3, concurrency=3)
    report = orch.start(job)  # test first: the real CLI runs the first file synchronously
    assert report.status == "COMPLETED", report.error
    assert (workdir / "doc0.md.summary").read_text() == "summary of doc0.md\n"
    orch.approve(job)

    # while units run, their tool_use and tool_result are already in the store
    def live_tool_events() -> bool:
        for active in orch.active_units(job):
            kinds = [e.kind for e in orch.events(job, active.number)]
            still_running = orch.unit(job, active.number).status == "RUNNING"
            if "tool_use" in kinds and "tool_result" in kinds and still_running:
                return True
        return False

    wait_until(live_tool_events, timeout=60, what="tool events of a running unit")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED" and final.completed == 3
    for i in range(3):
        assert (workdir / f"doc{i}.md.summary").read_text() == f"summary of doc{i}.md\n"
    rows = orch.results(job)
    assert all(r["output"].startswith("Wrote doc") for r in rows)
    assert final.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows), rel=1e-6)
    assert final.cost_usd > 0 and final.tokens_in > 0 and final.tokens_out > 0
    unit = orch.unit(job, rows[1]["unit"])
    kinds = [e.kind for e in unit.events]
    for kind in ("start", "system", "tool_use", "tool_result", "assistant", "result", "end"):
        assert kind in kinds, kinds
    assert unit.session_id and unit.turns >= 2


def test_a_429_storm_completes_with_no_failed_units(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    lock = threading.Lock()
    seen = {"n": 0}
    writer = summary_writer()

    def respond(req: MessagesRequest) -> Reply:
        with lock:
            seen["n"] += 1
            storm = seen["n"] <= 6
        if storm:
            return Reply.error(429, "rate_limit_error", "Number of requests has exceeded your rate limit",
                               headers={"retry-after": "1"})
        return writer(req)

    offline_claude(respond)
    job = file_job(orch, workdir, 4, concurrency=4, max_retries=8)
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=180)
    assert final.status == "COMPLETED" and final.failed == 0 and final.completed == 4
    assert sum(r["attempts"] for r in orch.results(job)) > 4  # the storm cost retries, not units
    assert any("will retry" in line.message for line in orch.logs(job, level="warning"))


def test_a_hung_model_call_is_killed_at_the_timeout(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    offline_claude(lambda req: Reply.hang(300))
    job = file_job(orch, workdir, 1, concurrency=1, timeout_s=4, max_retries=0)
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "FAILED"
    [row] = orch.results(job)
    assert "timed out after 4s" in row["error"]
    wait_until(lambda: not claude_processes_in(workdir), timeout=15, what="the CLI to be gone")


def test_a_budget_stops_the_job_paused(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    offline_claude(summary_writer())
    job = file_job(orch, workdir, 4, concurrency=1, budget_usd=0.000001)
    orch.start(job, skip_test=True)
    paused = wait_status(orch, job, {"PAUSED", "COMPLETED", "FAILED"}, timeout=120)
    assert paused.status == "PAUSED" and paused.pause_reason == "budget"
    assert paused.completed == 1 and paused.pending == 3
    assert paused.cost_usd > 0 and paused.projected_cost_usd == pytest.approx(paused.cost_usd * 4)


def test_a_quota_error_pauses_the_job_and_it_resumes_by_itself(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    writer = summary_writer()
    hit = {"done": False}
    lock = threading.Lock()

    def respond(req: MessagesRequest) -> Reply:
        with lock:
            first, hit["done"] = not hit["done"], True
        if first:
            return Reply.error(429, "rate_limit_error", f"Claude AI usage limit reached|{int(time.time()) + 3}")
        return writer(req)

    offline_claude(respond)
    job = file_job(orch, workdir, 3, concurrency=1, max_retries=0)
    orch.start(job, skip_test=True)
    held = wait_until(lambda: orch.status(job).hold_until, timeout=60, what="a quota hold")
    assert held > time.time() - 1
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED" and final.failed == 0  # no retry was spent (max_retries=0)
    assert any("quota reached" in line.message for line in orch.logs(job, level="warning"))


@pytest.mark.timeout(180)
def test_rpm_bounds_every_model_call_of_the_cli(orch, workdir: Path, offline_claude) -> None:  # noqa: F811
    """--rpm 3, two units of two model calls each: the CLI's fourth call must wait for the rolling
    minute (the gateway gates each call; gating once per unit would let all four through at once)."""
    lock = threading.Lock()
    arrivals: list[float] = []
    writer = summary_writer()

    def respond(req: MessagesRequest) -> Reply:
        with lock:
            arrivals.append(time.monotonic())
        return writer(req)

    offline_claude(respond)
    job = file_job(orch, workdir, 2, concurrency=2, rpm=3)
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=150)
    assert final.status == "COMPLETED" and final.completed == 2
    assert len(arrivals) == 4
    assert arrivals[2] - arrivals[0] < 30, "three calls fit in the first minute"
    assert arrivals[3] - arrivals[0] >= 59, f"the fourth call came {arrivals[3] - arrivals[0]:.1f}s after the first"
