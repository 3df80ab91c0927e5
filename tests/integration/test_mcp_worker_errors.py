"""Bad `mcp` worker options through the CLI, REST and MCP `create_job`: one line naming the option in
the caller's words (`--tool` on the CLI, `worker_options.tool` on REST and MCP), and no job made.
The tool listing and the input-schema check run against the real server (mcp_unit_server.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.cli.spec_options import flag_for
from agentic_batch.errors import name_fields
from tests.fixtures.abp import abp
from tests.fixtures.mcp_client import call_error, mcp_session
from tests.fixtures.mcp_servers import stdio_server, write_config
from tests.fixtures.web import web  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(300)

Case = tuple[list[str], dict[str, Any], str, str | None]


def cases(workdir: Path) -> list[Case]:
    """(CLI flags, the same worker options as JSON, the message and hint with «field» references)."""
    config = str(write_config(workdir / "servers.json", {"units": stdio_server()}))

    def both(tool: str, arguments: str | None = None) -> tuple[list[str], dict[str, Any]]:
        flags = ["--mcp-config", "servers.json", "--tool", tool]
        options: dict[str, Any] = {"mcp_config": config, "tool": tool}
        if arguments is not None:
            flags += ["--arguments", arguments]
            options["arguments"] = arguments  # REST and MCP may send the JSON text too
        return flags, options

    return [
        (*both("units"),
         "mcp worker: «worker_options.tool»: 'units' is not SERVER.TOOL (a server of the MCP config, a dot, one of "
         "its tools)", None),
        (*both("units.shout", '{"text": '),
         "mcp worker: «worker_options.arguments»: is not JSON: Expecting value: line 1 column 10 (char 9)", None),
        (*both("units.shout", '["hi"]'),
         "mcp worker: «worker_options.arguments»: must be a JSON object of the tool's arguments, not list", None),
        (*both("other.shout"), "«worker_options.tool» 'other.shout': «worker_options.mcp_config» has no server "
                               "'other' (servers: units)", None),
        (*both("units.yell"), "«worker_options.tool» 'units.yell': server 'units' has no tool 'yell' (it has: "
                              "count_words, refuse, shout, sleep, whoami)", None),
        (*both("units.shout", '{"text": "{{ name }}", "times": "{{ name }}"}'),
         "«worker_options.arguments» for item #0 do not match the input schema of units.shout: times: 'ann' is "
         "not of type 'integer'", "the tool takes: {text: string, times?: integer}"),
        (*both("units.shout", '{"text": "{{ nmae }}"}'),
         "«worker_options.arguments» value 'text' (item #0) uses 'nmae' but the item has no field 'nmae' "
         "(fields: name)", "line 1; a template can use the item's fields by name, item/row for the whole item, and "
                           "`{{ x | default('') }}` or `{% if x is defined %}` for fields some items lack"),
        (["--tool", "units.shout"], {"tool": "units.shout"},
         "mcp worker: «worker_options.mcp_config»: Field required", None),
    ]


def said(template: str, hint: str | None, namer: Any = None) -> str:
    message = name_fields(template, namer)
    return f"{message} ({name_fields(hint, namer)})" if hint else message


@pytest.mark.asyncio
async def test_bad_mcp_worker_options_are_one_line_in_each_callers_words(web, workdir: Path) -> None:  # noqa: F811
    (workdir / "names.jsonl").write_text(json.dumps({"name": "ann"}) + "\n")
    source = {"kind": "jsonl", "path": str(workdir / "names.jsonl")}
    async with mcp_session(workdir) as session:
        for flags, options, template, hint in cases(workdir):
            as_flag = said(template, hint, flag_for)
            cli = abp("create", "--name", "bad", "--jsonl", "names.jsonl", "--worker", "mcp", *flags, cwd=workdir)
            assert cli.returncode == 1, (flags, cli.stderr)
            assert cli.stderr.strip().splitlines()[0] == f"error: {as_flag}", (flags, cli.stderr)
            assert "Traceback" not in cli.stderr

            body = {"name": "bad", "source": source, "worker": "mcp", "worker_options": options}
            rest = web.post("/api/jobs", body)
            expected = {"error": name_fields(template), "hint": name_fields(hint) if hint else None}
            assert rest.status_code == 422 and rest.json() == expected, (options, rest.text)

            mcp = await call_error(session, "create_job", **body)
            assert mcp.splitlines()[0] == said(template, hint), (options, mcp)
            assert "--" not in mcp and "--" not in rest.text  # no CLI flag outside the CLI
        # a shared server cannot follow each unit into its worktree
        isolated = abp("create", "--name", "bad", "--jsonl", "names.jsonl", "--worker", "mcp", "--mcp-config",
                       "servers.json", "--tool", "units.shout", "--isolate", "worktree", cwd=workdir)
        refusal = ("worktree does not apply to the mcp worker: it serves every unit from the job's directory, not "
                   "from a unit's worktree")
        assert isolated.returncode == 1 and isolated.stderr.strip() == f"error: --isolate {refusal}"
        rest = web.post("/api/jobs", {"name": "bad", "source": source, "worker": "mcp", "isolate": "worktree",
                                      "worker_options": {"mcp_config": str(workdir / "servers.json"),
                                                         "tool": "units.shout"}})
        assert rest.status_code == 422 and rest.json()["error"] == f"isolate {refusal}"
    assert web.orch.list_jobs() == []  # nothing half-created
