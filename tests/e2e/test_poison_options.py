"""Create-time checks and the output cap, through every interface a user has: the real CLI, the REST
API on a real server, the MCP server over stdio; and a real command printing 50 MB (the engine's
generic cap, whole text in a file, is tested with a python worker in test_poison_units)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from agentic_batch.service import Orchestrator
from tests.e2e.test_cli_errors import assert_nothing_written, assert_one_line_error
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)

UNRESOLVABLE = {"type": "object", "properties": {"label": {"$ref": "#/$defs/label"}}}


def items(workdir: Path, n: int = 2) -> Path:
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return path


def test_cli_refuses_an_output_schema_whose_ref_does_not_resolve(workdir: Path, orch: Orchestrator) -> None:
    items(workdir)
    (workdir / "schema.json").write_text(json.dumps(UNRESOLVABLE))
    result = abp("create", "--name", "bad", "--jsonl", "items.jsonl", "--command", "echo {{ row.id }}",
                 "--output-schema", "schema.json", cwd=workdir)
    assert_one_line_error(result, "--output-schema", "$ref", "#/$defs/label")
    assert_nothing_written(orch, workdir)


def test_cli_bounds_max_output_bytes(workdir: Path, orch: Orchestrator) -> None:
    items(workdir)
    result = abp("create", "--name", "bad", "--jsonl", "items.jsonl", "--command", "echo {{ row.id }}",
                 "--max-output-bytes", "10", cwd=workdir)
    assert_one_line_error(result, "--max-output-bytes", "1024")
    assert_nothing_written(orch, workdir)


def test_rest_refuses_an_unresolvable_schema_naming_the_field(web: Web) -> None:  # noqa: F811
    response = web.post("/api/jobs", spec(web.workdir, "nap", output_schema=UNRESOLVABLE))
    assert response.status_code == 422, response.text
    assert "output_schema" in response.json()["error"] and "$ref" in response.json()["error"]
    assert web.orch.store.jobs.list_jobs() == []
    created = web.ok("POST", "/api/jobs", spec(web.workdir, "nap", max_output_bytes=2048), status=201)
    assert web.orch.store.jobs.get_job(created["job_id"]).max_output_bytes == 2048
    assert web.ok("GET", f"/api/jobs/{created['job_id']}")["max_output_bytes"] == 2048
    assert web.post("/api/jobs", spec(web.workdir, "nap", max_output_bytes=10)).status_code == 422


@pytest.mark.asyncio
async def test_mcp_refuses_an_unresolvable_schema_naming_the_field(workdir: Path, orch: Orchestrator) -> None:
    path = items(workdir)
    async with mcp_session(workdir) as session:
        text = await call_error(session, "create_job", name="bad", source={"kind": "jsonl", "path": str(path)},
                                worker="command", worker_options={"command": "echo {{ row.id }}"},
                                output_schema=UNRESOLVABLE)
        assert "output_schema" in text and "$ref" in text
        assert orch.store.jobs.list_jobs() == []
        created = await call(session, "create_job", name="capped", source={"kind": "jsonl", "path": str(path)},
                             worker="command", worker_options={"command": "echo {{ row.id }}"},
                             max_output_bytes=2048)
    assert orch.store.jobs.get_job(created["job_id"]).max_output_bytes == 2048


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (VmHWM), 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@pytest.mark.slow
def test_a_50_mb_stdout_is_capped_and_shown_promptly_with_modest_executor_memory(workdir: Path,
                                                                                 orch: Orchestrator) -> None:
    items(workdir, n=2)
    # 50,000,008 bytes in lines of 100
    program = "import sys; sys.stdout.write('HEAD' + ('x' * 99 + chr(10)) * 500_000 + 'TAIL')"
    result = abp("create", "--name", "big", "--jsonl", "items.jsonl", "--key", "id", "--concurrency", "1",
                 "--command", f"{sys.executable} -c \"{program}\"", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)["job_id"]
    pid = orch.start(job, skip_test=True).executor.pid
    peak = 0.0
    while orch.status(job).status == "RUNNING":
        peak = max(peak, peak_rss_mb(pid))
        time.sleep(0.05)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=240)
    assert final.status == "COMPLETED", final
    wait_until(lambda: orch.status(job).executor.state == "stopped", timeout=30, what="the executor to exit")
    print(f"executor peak RSS {peak:.0f} MB")  # 222 MB before the cap; a loose bound, not a benchmark
    assert peak < 200

    unit = orch.store.browse.unit_by_key(job, "1")
    output = unit.output
    assert len(output.encode()) <= 4 * 1024 * 1024
    assert output.startswith("HEADxxx") and output.endswith("xxx\nTAIL") and "bytes" in output[2_000_000:2_200_000]

    for args in (["--json"], []):  # the timeout is a hang guard (this took over 11 min before), not a limit
        shown = abp("show", str(job), str(unit.number), *args, cwd=workdir, timeout=300)
        assert shown.returncode == 0, shown.stderr
        assert "TAIL" in shown.stdout and len(shown.stdout) < 12 * 1024 * 1024
