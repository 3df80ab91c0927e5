"""Jobs of the `mcp` worker through the real CLI and real detached executors, calling a real MCP server
(tests/fixtures/mcp_unit_server.py): test first then approve, a unit that hangs past --timeout, the
server killed mid-job, and no server left behind when the executor exits, however it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp, wait_status, wait_until
from tests.fixtures.mcp_servers import alive, group_alive, started_pids, stdio_server, write_config

pytestmark = pytest.mark.timeout(180)

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "PAUSED"}


def ok(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = abp(*args, cwd=cwd)
    assert result.returncode == 0, f"abp {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pids"
    path.mkdir()
    return path


@pytest.fixture
def servers(workdir: Path, pid_dir: Path) -> Path:
    return write_config(workdir / "servers.json", {"units": stdio_server(pid_dir=pid_dir)})


def items(workdir: Path, rows: list[dict[str, Any]]) -> str:
    (workdir / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return "items.jsonl"


def create(workdir: Path, tool: str, arguments: dict[str, Any], rows: list[dict[str, Any]], *flags: str) -> str:
    return ok("create", "--name", "mcp", "--jsonl", items(workdir, rows), "--key", "id", "--worker", "mcp",
              "--mcp-config", "servers.json", "--tool", tool, "--arguments", json.dumps(arguments), *flags,
              cwd=workdir).stdout.strip()


def no_server_left(pid_dir: Path) -> None:
    pids = started_pids(pid_dir)
    assert pids
    wait_until(lambda: not any(alive(pid) or group_alive(pid) for pid in pids), timeout=20,
               what=f"servers {pids} to be gone")


def test_test_first_then_approve_text_data_and_tool_errors(workdir: Path, orch: Orchestrator, servers: Path,
                                                           pid_dir: Path) -> None:
    for name, text in [("a.txt", "one two three\n"), ("b.txt", "four five\nsix\n")]:
        (workdir / name).write_text(text)
    rows = [{"id": "a", "path": str(workdir / "a.txt")}, {"id": "b", "path": str(workdir / "b.txt")},
            {"id": "gone", "path": str(workdir / "missing.txt")}]
    job = create(workdir, "units.count_words", {"path": "{{ path }}"}, rows, "--concurrency", "2")

    tested = ok("start", job, cwd=workdir)  # `abp test`: the first unit alone, shown
    assert '"words": 3' in tested.stdout and "→ units.count_words({\"path\"" in tested.stdout
    assert orch.status(int(job)).status == "TESTING"
    ok("start", job, "--approve", cwd=workdir)
    wait_status(orch, int(job), ENDED)

    rows_out = {r["key"]: r for r in orch.results(int(job))}
    assert rows_out["a"]["status"] == "COMPLETED" and rows_out["a"]["data.words"] == 3
    assert rows_out["b"]["data.words"] == 3 and rows_out["b"]["data.lines"] == 2
    missing = rows_out["gone"]  # the tool raised: isError, failed at once, not retried
    assert missing["status"] == "FAILED" and missing["attempts"] == 1 and missing["error_class"] == "permanent"
    assert "units.count_words returned an error" in missing["error"]
    wait_until(lambda: orch.status(int(job)).executor.state == "stopped", timeout=20, what="executor exit")
    no_server_left(pid_dir)
    assert len(started_pids(pid_dir)) == 3  # one listing at create, one for the test run, one for the run


def test_a_unit_that_hangs_past_timeout_fails_as_timeout_and_the_rest_run(workdir: Path, orch: Orchestrator,
                                                                          servers: Path, pid_dir: Path) -> None:
    rows = [{"id": "quick1", "s": 0.01}, {"id": "stuck", "s": 600}, {"id": "quick2", "s": 0.01},
            {"id": "quick3", "s": 0.01}]
    job = create(workdir, "units.sleep", {"seconds": "{{ s }}"}, rows, "--timeout", "10", "--max-retries", "0",
                 "--concurrency", "2")
    ok("start", job, "--skip-test", cwd=workdir)
    wait_status(orch, int(job), ENDED, timeout=120)

    by_key = {r["key"]: r for r in orch.results(int(job))}
    assert by_key["stuck"]["status"] == "FAILED" and "timed out after 10s" in by_key["stuck"]["error"]
    assert all(by_key[k]["status"] == "COMPLETED" and by_key[k]["output"] == "slept 0.01"
               for k in ("quick1", "quick2", "quick3")), by_key
    assert len(started_pids(pid_dir)) == 2  # the listing, then one server for the whole run: the timeout kept it
    no_server_left(pid_dir)


def test_the_server_killed_mid_job_is_restarted_and_its_units_retried(workdir: Path, orch: Orchestrator,
                                                                      servers: Path, pid_dir: Path) -> None:
    rows = [{"id": f"u{i}", "s": 0.5} for i in range(8)]
    job = create(workdir, "units.sleep", {"seconds": "{{ s }}"}, rows, "--concurrency", "2")
    listing = started_pids(pid_dir)
    ok("start", job, "--skip-test", cwd=workdir)
    server = wait_until(lambda: [p for p in started_pids(pid_dir) if p not in listing], timeout=60,
                        what="the job's server")[0]
    wait_until(lambda: orch.status(int(job)).running > 0, timeout=30, what="a unit in flight")
    os.kill(server, signal.SIGKILL)
    wait_status(orch, int(job), ENDED, timeout=120)

    status = orch.status(int(job))
    assert status.status == "COMPLETED" and status.completed == 8, orch.results(int(job))
    results = orch.results(int(job))
    assert any(r["attempts"] > 1 for r in results)  # the units under the kill ran again
    assert len(started_pids(pid_dir)) >= 3  # listing, the killed server, its replacement
    no_server_left(pid_dir)


def test_an_executor_killed_with_sigkill_takes_its_server_along(workdir: Path, orch: Orchestrator, servers: Path,
                                                                pid_dir: Path) -> None:
    job = create(workdir, "units.sleep", {"seconds": "{{ s }}"}, [{"id": "long", "s": 600}])
    listing = started_pids(pid_dir)
    ok("start", job, "--skip-test", cwd=workdir)
    server = wait_until(lambda: [p for p in started_pids(pid_dir) if p not in listing], timeout=60,
                        what="the job's server")[0]
    executor = orch.status(int(job)).executor.pid
    assert executor and alive(server)
    os.kill(executor, signal.SIGKILL)
    wait_until(lambda: not alive(server) and not group_alive(server), timeout=20,
               what="the watchdog to kill the server")


def test_the_readme_example_runs_as_written(workdir: Path, orch: Orchestrator) -> None:
    """The README's `--worker mcp` example, run by bash in a directory laid out like a clone."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("**One MCP tool per unit**"):]
    start = section.index("```bash\n") + len("```bash\n")
    script = section[start:section.index("\n```", start)]
    for name in ("README.md", "pyproject.toml"):
        (workdir / name).write_text((root / name).read_text())
    (workdir / "tests").symlink_to(root / "tests")
    bin_dir = str(Path(sys.executable).parent)  # `abp` and a `python` with the mcp SDK
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(root)}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=150, check=False)
    assert done.returncode == 0, done.stderr
    assert "abp run --name words" in script and "data.words" in done.stdout.splitlines()[0]
    rows = {r["path"]: r for r in orch.results("words")}
    assert rows["README.md"]["data.words"] == len(readme.split())
    assert rows["pyproject.toml"]["status"] == "COMPLETED"
