"""The real Claude Code CLI (bundled in claude-agent-sdk) as the MCP client of `abp mcp`.

The CLI gets an `--mcp-config` that starts `python -m agentic_batch mcp` over stdio; the scripted model
server on 127.0.0.1 plays the model, whose turns call `mcp__abp__create_job` and `mcp__abp__start_job`
(test, then approve; or skip the test). When the CLI exits it stops the MCP server, and the job still
completes in its detached executor.

What the CLI does with MCP tools (CLI 2.1.330): the system/init message lists them as
`mcp__<server>__<tool>`. By default they are *deferred*: the request's `tools` holds only `ToolSearch`
and the names arrive in a message, so a real model would fetch schemas first. With
`ENABLE_TOOL_SEARCH=false` each tool is sent in `tools` with our description and input schema, which
is what this test checks the model would see. The server's `instructions` arrive under "# MCP Server
Instructions" in the `{"role": "system"}` message that follows the user's prompt.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from agentic_batch.testing.anthropic_replies import Reply
from agentic_batch.testing.anthropic_scripts import MessagesRequest
from agentic_batch.testing.anthropic_server import ScriptedAnthropicServer
from agentic_batch.testing.claude_env import isolated_environ
from agentic_batch.workers.claude_process import bundled_cli
from tests.fixtures.abp import wait_status
from tests.fixtures.claude_env import needs_claude_cli
from tests.fixtures.funcs import ref

pytestmark = [needs_claude_cli, pytest.mark.timeout(120)]

ABP_TOOLS = ["add_units", "apply_changes", "cancel_job", "clean_job", "create_job", "delete_job", "edit_prompt",
             "export_results", "get_diff", "get_error_summary", "get_job_status", "get_results", "get_unit",
             "list_jobs", "list_sources", "open_dashboard", "resume_all_jobs", "resume_job", "retry_failed",
             "review_changes", "start_job", "stop_dashboard", "stop_job"]
JOB_ID = re.compile(r'"job_id":\s*(\d+)')


def model_script(csv_path: Path, flow: str):  # type: ignore[no-untyped-def]
    """The model's turns: create the job, then start it (test + approve, or skip_test), then say so."""
    calls: list[tuple[str, dict[str, Any]]] = [("mcp__abp__create_job", {
        "name": "mcp-e2e", "source": {"kind": "csv", "path": str(csv_path), "key": "id"}, "worker": "python",
        "worker_options": {"function": ref("echo")}, "prompt": "Classify {{ title }}"})]
    calls += ([("mcp__abp__start_job", {}), ("mcp__abp__start_job", {"approve": True})] if flow == "test-approve"
              else [("mcp__abp__start_job", {"skip_test": True})])

    def respond(req: MessagesRequest) -> Reply:
        if req.turn >= len(calls):
            return Reply.text("The batch job is running in the background.")
        name, arguments = calls[req.turn]
        if req.turn > 0:  # later calls take the job id from the previous result (every one carries it)
            match = JOB_ID.search(req.tool_results[0]["text"]) if req.tool_results else None
            arguments = {"job_id": int(match.group(1)) if match else -1, **arguments}
        return Reply.tool_use(name, arguments)

    return respond


def tool_json(block: dict[str, Any]) -> dict[str, Any]:
    """The JSON our tool returned, from a tool_result block of the CLI's stream-json."""
    content = block["content"]
    return json.loads(content if isinstance(content, str) else content[0]["text"])  # type: ignore[no-any-return]


def cli_path() -> str:
    found = bundled_cli()
    return str(found) if found else str(shutil.which("claude"))


@pytest.mark.parametrize("flow", ["test-approve", "skip-test"])
def test_claude_code_runs_a_batch_job_through_abp_mcp(flow: str, tmp_path: Path, abp_home: Path,
                                                      orch: Orchestrator) -> None:
    data = tmp_path / "tickets.csv"
    titles = ["login broken", "add dark mode", "how do I export?", "crash on save"]
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title"])
        writer.writerows([(i + 1, t) for i, t in enumerate(titles)])
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"abp": {
        "command": sys.executable, "args": ["-m", "agentic_batch", "mcp"], "env": {"ABP_HOME": str(abp_home)}}}}))
    home = tmp_path / "claude-home"
    home.mkdir()

    with ScriptedAnthropicServer(model_script(data, flow)) as server:
        env = isolated_environ(server.url, home)
        env.update(ABP_HOME=str(abp_home), ENABLE_TOOL_SEARCH="false")
        allowed = "mcp__abp__create_job,mcp__abp__start_job"
        result = subprocess.run(
            [cli_path(), "-p", "Classify every ticket in tickets.csv", "--mcp-config", str(config),
             "--strict-mcp-config", "--output-format", "stream-json", "--verbose", "--allowedTools", allowed],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        requests = server.message_requests()
    assert result.returncode == 0, result.stderr[-2000:]
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    init = next(m for m in messages if m.get("type") == "system" and m.get("subtype") == "init")
    assert {"name": "abp", "status": "connected"}.items() <= init["mcp_servers"][0].items()
    assert sorted(t for t in init["tools"] if t.startswith("mcp__abp__")) == [f"mcp__abp__{t}" for t in ABP_TOOLS]

    sent = {t["name"]: t for t in requests[0].body["tools"]}  # what the model is shown
    assert sorted(n for n in sent if n.startswith("mcp__abp__")) == [f"mcp__abp__{t}" for t in ABP_TOOLS]
    assert "approve" in sent["mcp__abp__start_job"]["description"]
    assert sent["mcp__abp__create_job"]["input_schema"]["properties"]["source"]["properties"]["kind"]["enum"]
    assert "Protocol (test first)" in json.dumps(requests[0].body)  # the server instructions reach the model

    results = [b for m in messages if m.get("type") == "user" for b in m["message"]["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert len(results) == (3 if flow == "test-approve" else 2)
    assert not any(r.get("is_error") for r in results), results
    created = tool_json(results[0])
    assert created["units"] == 4 and created["preview_prompts"][0] == "Classify login broken"
    if flow == "test-approve":
        tested = tool_json(results[1])
        assert tested["job_status"] == "TESTING" and tested["test_unit"]["output"] == "1:Classify login broken"
        assert tool_json(results[2])["status"] in ("RUNNING", "COMPLETED")
    assert messages[-1]["type"] == "result" and messages[-1]["is_error"] is False

    # The CLI has exited and stopped its MCP server; the detached executor finishes the job.
    status = wait_status(orch, created["job_id"], {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=30)
    assert (status.status, status.completed) == ("COMPLETED", 4)
    outputs = [row["output"] for row in orch.results(created["job_id"])]
    assert outputs == [f"{i + 1}:Classify {t}" for i, t in enumerate(titles)]
