"""The read commands (`abp list`, `abp status JOB`, `abp show JOB UNIT`) import only what they need.

A user types them dozens of times while a job runs; most of their time is interpreter start-up and
imports (bench/cli_latency.py), so what they must NOT import is checked here, in a real `abp` process:
no Jinja2, no engine, no source readers, no `create` flags built from every worker's options, no web
or MCP stack, no provider SDKs. (A timing would be noise on a shared machine; a module list is not.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from agentic_batch import cli

#: Modules no read command needs (prefixes: a package and its submodules).
NOT_FOR_READING = (
    "jinja2", "agentic_batch.prompts", "agentic_batch.engine.executor", "agentic_batch.engine.runner",
    "agentic_batch.sources", "agentic_batch.spec", "agentic_batch.cli.spec_options",
    "agentic_batch.cli.job_commands", "agentic_batch.cli.review_commands", "agentic_batch.service.creation",
    "agentic_batch.workers.base", "agentic_batch.workers.registry", "agentic_batch.web", "agentic_batch.mcp_server",
    "alembic", "fastapi", "starlette", "uvicorn", "mcp", "httpx", "openai", "anthropic", "claude_agent_sdk",
)

_PROBE = """
import atexit, json, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
from agentic_batch.cli import main
main(sys.argv[2:])
"""


def _imported(args: list[str], tmp_path: Path) -> set[str]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(out.read_text()))


def _offending(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    banned = [p for p in NOT_FOR_READING if p not in allowed]
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in banned))


@pytest.fixture
def job_id(orch: Any, workdir: Path) -> int:
    (workdir / "items.jsonl").write_text("".join(json.dumps({"title": f"t{i}"}) + "\n" for i in range(3)))
    spec = {"name": "reading", "source": {"kind": "jsonl", "path": str(workdir / "items.jsonl")},
            "prompt": "Summarise {{ title }}", "worker": "command", "worker_options": {"command": "true"}}
    return int(orch.create(spec, cwd=workdir).job_id)


#: What the direct reads (`cli.quick` on `store.direct`) answer without: the full CLI's frameworks.
NOT_FOR_DIRECT_READS = ("sqlalchemy", "pydantic", "pydantic_core", "typer", "click", "agentic_batch.service.models",
                        "agentic_batch.service.orchestrator", "agentic_batch.cli.view_commands", "psycopg")


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["status", "{job}"], ["status", "{job}", "--json"],
                                     ["status"], ["show", "{job}", "2"], ["show", "{job}", "2", "--json"]])
def test_list_status_and_show_import_no_more_than_they_need(command: list[str], job_id: int, tmp_path: Path,
                                                            orch: Any) -> None:
    import sqlalchemy as sa

    with orch.store.database.engine.begin() as conn:
        conn.execute(sa.text("UPDATE units SET prompt = 'Summarise t1' WHERE job_id = :j AND number = 2"),
                     {"j": job_id})
    modules = _imported([a.format(job=job_id) for a in command], tmp_path)
    assert "agentic_batch.cli.quick" in modules  # the probe did run the command
    assert _offending(modules) == []
    assert sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in NOT_FOR_DIRECT_READS)) == []
    if "--json" in command:
        assert not [m for m in modules if m == "rich" or m.startswith("rich.")]  # JSON needs no renderer


def test_the_full_cli_imports_no_more_than_it_needs_either(job_id: int, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_DIRECT_READS", "0")
    for command in (["list"], ["status", str(job_id)], ["status", str(job_id), "--json"]):
        modules = _imported(command, tmp_path)
        assert "agentic_batch.cli.view_commands" in modules  # the full CLI answered
        assert _offending(modules) == []


def test_show_imports_no_more_than_it_needs(job_id: int, tmp_path: Path) -> None:
    # A unit that has not run shows its prompt previewed from the template: that needs the template
    # engine, and nothing else on the list.
    modules = _imported(["show", str(job_id), "1"], tmp_path)
    assert _offending(modules, allowed=("jinja2", "agentic_batch.prompts")) == []


def test_every_command_is_registered_from_its_module() -> None:
    """COMMAND_HOME (which module `abp NAME` needs) agrees with what each module registers."""
    homes: dict[str, str] = {}
    for module_name in cli.COMMAND_MODULES:
        probe = typer.Typer()
        __import__(f"agentic_batch.cli.{module_name}", fromlist=["register"]).register(probe)
        names = [info.name for info in probe.registered_commands]
        names += [group.typer_instance.info.name for group in probe.registered_groups]
        homes.update(dict.fromkeys(names, module_name))
    assert homes == cli.COMMAND_HOME


def test_a_command_registered_alone_still_parses(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agentic_batch", "list", "--bogus"], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120, check=False)
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr


def test_the_mcp_server_starts_without_the_other_commands(tmp_path: Path) -> None:
    """`abp mcp` is started by every MCP client session (Claude Code, the Inspector: once per call over
    stdio): it registers its own command alone, not `create`'s flags from every worker, nor the web app."""
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), "mcp"], input="", capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(out.read_text()))
    assert "agentic_batch.mcp_server.server" in modules  # the probe did run the server
    heavy = ("agentic_batch.cli.job_commands", "agentic_batch.cli.spec_options", "agentic_batch.cli.view_commands",
             "agentic_batch.web", "fastapi")
    assert sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in heavy)) == []
