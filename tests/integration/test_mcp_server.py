"""`abp mcp` driven by the mcp SDK's own client over stdio, as a real subprocess with the test's ABP_HOME.

The whole test-first flow as a model would run it (create -> test unit -> approve -> poll -> results ->
export), errors as tool errors with the CLI's words, resources, steering tools, HTTP, and the one
guarantee that matters most: a job keeps running after the MCP server is killed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentic_batch.errors import AbpError
from agentic_batch.service import Orchestrator
from tests.fixtures.abp import wait_status
from tests.fixtures.funcs import ref
from tests.fixtures.mcp_client import call, call_error, mcp_session, server_pids

pytestmark = pytest.mark.timeout(90)

TOOLS = {"create_job", "start_job", "edit_prompt", "get_job_status", "list_jobs", "get_results", "get_unit",
         "get_error_summary", "stop_job", "resume_job", "resume_all_jobs", "cancel_job", "retry_failed",
         "export_results", "list_sources", "get_diff", "review_changes", "apply_changes", "clean_job", "add_units",
         "delete_job", "open_dashboard", "stop_dashboard"}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def echo_job(csv_path: Path, name: str = "titles", **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": {"kind": "csv", "path": str(csv_path), "key": "id"}, "worker": "python",
            "worker_options": {"function": ref("echo")}, "prompt": "Title: {{ title }}", **extra}


@pytest.mark.asyncio
async def test_create_test_approve_poll_results_export(workdir: Path, tmp_path: Path) -> None:
    titles = ["alpha", "beta", "gamma", "delta", "epsilon"]
    data = write_csv(workdir / "tickets.csv", [{"id": i + 1, "title": t} for i, t in enumerate(titles)])
    async with mcp_session(workdir) as session:
        listed = (await session.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        described = {t.name: t.description or "" for t in listed}
        assert "approve" in described["start_job"] and "ask" in described["start_job"].lower()
        assert "never put the item list in the" in described["create_job"]
        schema = next(t for t in listed if t.name == "create_job").input_schema
        assert schema["properties"]["source"]["properties"]["kind"]["enum"] == ["files", "csv", "json", "jsonl",
                                                                                "sql", "python"]
        assert next(t for t in listed if t.name == "get_job_status").annotations.read_only_hint
        # every tool that returns data declares its shape; the statuses are the service's enums
        declared = {t.name: t.output_schema for t in listed}
        assert {name for name, out in declared.items() if not out} == {"list_sources"}
        assert "RUNNING" in json.dumps(declared["get_job_status"]) and "PENDING" in json.dumps(declared["get_unit"])

        catalog = await call(session, "list_sources")
        workers = catalog["workers"]
        assert "function*" in workers["python"] and {"claude", "openai", "anthropic", "command"} <= set(workers)
        assert (await call(session, "list_sources", kind="command"))["worker"]["options"]["command"]["required"]
        assert set(catalog["sources"]) == {"files", "csv", "json", "jsonl", "sql", "python"}

        created = await call(session, "create_job", **echo_job(data))
        job_id = created["job_id"]
        assert created["units"] == 5 and created["status"] == "CREATED"
        assert created["preview_prompts"][:2] == ["Title: alpha", "Title: beta"]
        assert created["prompt_template"] == "Title: {{ title }}"
        assert f"start_job(job_id={job_id})" in created["next_step"]

        tested = await call(session, "start_job", job_id=job_id)
        assert tested["job_status"] == "TESTING" and tested["test_passed"] is True
        assert tested["test_unit"]["output"] == "1:Title: alpha"
        assert tested["remaining_units"] == 4 and "approve=true" in tested["next_step"]
        assert tested["test_unit"]["conversation"]["events"] >= 1
        again = await call(session, "start_job", job_id=job_id)  # a TESTING job: the waiting result again
        assert again["test_unit"]["number"] == tested["test_unit"]["number"] == 1

        started = await call(session, "start_job", job_id=job_id, approve=True)
        assert started["status"] in ("RUNNING", "COMPLETED") and started["executor"]["pid"]

        status = await call(session, "get_job_status", job_id=job_id, wait_seconds=30)
        deadline = time.monotonic() + 30
        while status["status"] != "COMPLETED" and time.monotonic() < deadline:
            status = await call(session, "get_job_status", job_id=job_id, wait_seconds=5)
        assert status["status"] == "COMPLETED", status
        assert (status["completed"], status["total"], status["progress"]) == (5, 5, 100.0)
        assert "COMPLETED" in status["summary"] and "export_results" in status["next_step"]

        outputs, offset, pages = [], 0, 0
        while offset is not None:
            page = await call(session, "get_results", job_id=job_id, offset=offset, limit=2)
            assert page["total"] == 5 and page["returned"] <= 2
            outputs += [row["output"] for row in page["rows"]]
            offset, pages = page["next_offset"], pages + 1
        assert pages == 3
        assert outputs == [f"{i + 1}:Title: {t}" for i, t in enumerate(titles)]
        assert (await call(session, "get_results", job_id=job_id, status="failed"))["total"] == 0
        cut = await call(session, "get_results", job_id=job_id, limit=1, max_chars=100, status="completed",
                         item_fields=True)
        assert cut["rows"][0]["title"] == "alpha" and "truncated" not in cut["rows"][0]

        unit = await call(session, "get_unit", job_id=job_id, unit=cut["rows"][0]["unit"])
        assert unit["payload"] == {"id": "1", "title": "alpha"} and unit["prompt"] == "Title: alpha"
        assert unit["conversation"]["lines"] and unit["status"] == "COMPLETED"

        exported = await call(session, "export_results", job_id=job_id, path=str(tmp_path / "out.csv"))
        for tool, result in (("create_job", created), ("start_job", tested), ("start_job", started),
                             ("get_job_status", status), ("get_results", page), ("get_unit", unit),
                             ("export_results", exported)):
            jsonschema.validate(result, declared[tool])  # what a client that checks structuredContent sees
        assert exported == {"job_id": job_id, "path": str(tmp_path / "out.csv"), "format": "csv", "rows": 5}
        with open(tmp_path / "out.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["title"] for r in rows] == titles and {r["status"] for r in rows} == {"COMPLETED"}
        relative = await call(session, "export_results", job_id=job_id, path="out.jsonl")
        assert relative["path"] == str(workdir / "out.jsonl") and relative["rows"] == 5

        jobs = json.loads((await session.read_resource("abp://jobs")).contents[0].text)  # type: ignore[union-attr]
        assert [j["id"] for j in jobs["jobs"]] == [job_id]
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["abp://jobs/{job_id}"]
        one = json.loads((await session.read_resource(f"abp://jobs/{job_id}")).contents[0].text)  # type: ignore[union-attr]
        assert one["status"] == "COMPLETED" and one["completed"] == 5
        listed_jobs = await call(session, "list_jobs", status="completed")
        assert [j["id"] for j in listed_jobs["jobs"]] == [job_id]


@pytest.mark.asyncio
async def test_errors_are_tool_errors_with_the_cli_words(workdir: Path, orch: Orchestrator) -> None:
    data = write_csv(workdir / "rows.csv", [{"id": 1, "title": "a"}])
    missing = echo_job(workdir / "missing.csv")
    with pytest.raises(AbpError) as bad_source:
        orch.create(missing)
    with pytest.raises(AbpError) as unknown_job:
        orch.status(4242)
    bad_field = echo_job(data, prompt="{{ titel }}")
    with pytest.raises(AbpError) as bad_template:
        orch.create(bad_field)
    async with mcp_session(workdir) as session:
        assert await call_error(session, "create_job", **missing) == bad_source.value.one_line()
        assert "missing.csv" in bad_source.value.one_line()
        assert await call_error(session, "get_job_status", job_id=4242) == unknown_job.value.one_line()
        assert await call_error(session, "start_job", job_id="4242", approve=True) == unknown_job.value.one_line()
        assert await call_error(session, "create_job", **bad_field) == bad_template.value.one_line()
        assert "titel" in bad_template.value.one_line()
        assert "unknown worker kind 'robot'" in await call_error(
            session, "create_job", **{**echo_job(data), "worker": "robot"})
        assert "a sql source needs" in await call_error(
            session, "create_job", **{**echo_job(data), "source": {"kind": "sql", "query": "select 1"}})
        assert "concurrency" in await call_error(session, "create_job", **echo_job(data, concurrency=0))
        created = await call(session, "create_job", **echo_job(data))
        assert "cannot approve" in await call_error(session, "start_job", job_id=created["job_id"], approve=True)
        assert await call_error(session, "start_job", job_id=created["job_id"], approve=True, reject=True) == \
            "give approve or reject, not both"
        assert "status 'done'" in await call_error(session, "get_results", job_id=created["job_id"], status="done")
        assert "has no unit" in await call_error(session, "get_unit", job_id=created["job_id"], unit=999)
        with pytest.raises(Exception, match="no job '4242'"):
            await session.read_resource("abp://jobs/4242")
        # Nothing was written for the bad calls: only the one good job exists.
        assert [j["id"] for j in (await call(session, "list_jobs"))["jobs"]] == [created["job_id"]]


@pytest.mark.asyncio
async def test_reject_edit_retest_and_steering_tools(workdir: Path) -> None:
    data = write_csv(workdir / "slow.csv", [{"id": i, "sleep": 0.4} for i in range(1, 9)])
    async with mcp_session(workdir) as session:
        job = (await call(session, "create_job", **echo_job(data, name="edit-me", prompt="Row {{ id }}")))["job_id"]
        await call(session, "start_job", job_id=job)
        rejected = await call(session, "start_job", job_id=job, reject=True)
        assert rejected["status"] == "CREATED" and "edit_prompt" in rejected["next_step"]
        edited = await call(session, "edit_prompt", job_id=job, prompt="Item {{ id }}")
        assert edited["status"] == "CREATED"
        retested = await call(session, "start_job", job_id=job)
        assert retested["test_unit"]["output"] == "1:Item 1"
        from_intent = await call(session, "create_job", **{**echo_job(data, name="intent"), "prompt": None,
                                                           "intent": "Check the row"})
        assert from_intent["prompt_synthesized"] and "Check the row" in from_intent["prompt_template"]
        assert "show them the prompt" in from_intent["next_step"]

        slow = (await call(session, "create_job", name="slow", source={"kind": "csv", "path": str(data)},
                           worker="python", worker_options={"function": ref("slow")}, concurrency=1))["job_id"]
        started = await call(session, "start_job", job_id=slow, skip_test=True)
        assert started["status"] == "RUNNING" and "detached executor" in started["message"]
        await call(session, "stop_job", job_id=slow)
        paused = await call(session, "get_job_status", job_id=slow, wait_seconds=20)
        assert paused["status"] == "PAUSED" and paused["completed"] < 8
        assert (await call(session, "resume_job", job_id=slow))["status"] == "RUNNING"
        cancelled = await call(session, "cancel_job", job_id=slow)
        assert cancelled["status"] == "CANCELLED" and cancelled["cancelled"] > 0
        # Let the cancelled executor exit first: a retry racing its shutdown finds it "already running" and
        # the job then sits RUNNING without an executor (a service-layer race, reported; not this test's topic).
        deadline = time.monotonic() + 15
        while _alive(cancelled["executor"]["pid"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        retried = await call(session, "retry_failed", job_id=slow, include_cancelled=True)
        assert retried["status"] == "RUNNING"
        done = await call(session, "get_job_status", job_id=slow, wait_seconds=30)
        assert (done["status"], done["completed"]) == ("COMPLETED", 8)


@pytest.mark.asyncio
async def test_large_outputs_are_cut_with_a_note(workdir: Path) -> None:
    data = write_csv(workdir / "rows.csv", [{"id": i, "title": f"t{i}"} for i in range(1, 4)])
    long_prompt = "{{ title }} " + "lorem ipsum " * 500
    async with mcp_session(workdir) as session:
        job = (await call(session, "create_job", **echo_job(data, prompt=long_prompt)))["job_id"]
        await call(session, "start_job", job_id=job, skip_test=True)
        assert (await call(session, "get_job_status", job_id=job, wait_seconds=30))["status"] == "COMPLETED"
        page = await call(session, "get_results", job_id=job, max_chars=200)
        full = len("1:t1 " + "lorem ipsum " * 500)
        row = page["rows"][0]
        assert row["truncated"] == {"output": full} and len(row["output"]) < 300
        assert row["output"].endswith(f"[truncated: {full} characters in all]") and "export_results" in page["note"]
        short = await call(session, "get_unit", job_id=job, unit=row["unit"], max_chars=200)
        assert short["truncated"] == {"prompt": full - 2, "output": full} and "max_chars" in short["note"]
        whole = await call(session, "get_unit", job_id=job, unit=row["unit"], max_chars=10_000)
        assert "truncated" not in whole and len(whole["output"]) == full


@pytest.mark.asyncio
async def test_job_completes_after_the_mcp_server_is_killed(workdir: Path, orch: Orchestrator) -> None:
    runlog = workdir / "runlog.jsonl"
    data = write_csv(workdir / "slow.csv", [{"id": i, "sleep": 1.0} for i in range(1, 7)])
    async with mcp_session(workdir, env={"ABP_TEST_RUNLOG": str(runlog)}) as session:
        [server_pid] = server_pids()
        job = (await call(session, "create_job", name="survivor", source={"kind": "csv", "path": str(data)},
                          worker="python", worker_options={"function": ref("slow")}, concurrency=2))["job_id"]
        assert (await call(session, "start_job", job_id=job))["test_passed"]
        started = await call(session, "start_job", job_id=job, approve=True)
        executor_pid = started["executor"]["pid"]
        os.kill(server_pid, signal.SIGKILL)
        # The executor leads a session of its own, so neither the server's death nor the client's
        # killpg of the server's group reaches it.
        assert os.getsid(executor_pid) == executor_pid != os.getpgid(server_pid)
    assert not _alive(server_pid)
    assert _alive(executor_pid), "the executor died with the MCP server"
    assert orch.status(job).completed < 6, "the job finished before the server was killed; nothing was shown"
    status = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=30)
    assert (status.status, status.completed, status.total) == ("COMPLETED", 6, 6)
    ends = [json.loads(line)["key"] for line in runlog.read_text().splitlines() if '"end"' in line]
    assert sorted(ends) == ["1", "2", "3", "4", "5", "6"]  # every unit ran exactly once


@pytest.mark.asyncio
async def test_streamable_http_on_localhost(workdir: Path) -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agentic_batch", "mcp", "--http", "--port", str(port)],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        assert _listening_addresses(port) == {"127.0.0.1"}
        async with httpx2.AsyncClient(timeout=30) as client, \
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS
            assert (await call(session, "list_jobs"))["jobs"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_missing_mcp_extra_is_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # A sitecustomize that hides the installed SDK, as if the extra were not installed.
    (shadow / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mcp' or name.startswith('mcp.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    result = subprocess.run([sys.executable, "-m", "agentic_batch", "mcp"], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "PYTHONPATH": str(shadow)}, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'agentic-batch[mcp]'" in lines[0], result.stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found
