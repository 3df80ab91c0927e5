"""The same bad job spec through the CLI, REST and MCP gives the same message, each naming the field in
its caller's words: the CLI's flag (`--timeout`, `--sql-db`), REST's and MCP's field path (`timeout_s`,
`source.db_url`). REST and MCP used to quote CLI flags ("a sql source needs --sql-db")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentic_batch.cli.spec_options import flag_for
from agentic_batch.errors import name_fields
from tests.fixtures.abp import abp
from tests.fixtures.mcp_client import call_error, mcp_session
from tests.fixtures.web import web  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)


Case = tuple[list[str], dict[str, Any], str, str | None]


def cases(workdir: Path) -> list[Case]:
    """(CLI flags, the same spec as JSON, the message with «field» references, the source kind)."""
    (workdir / "t.csv").write_text("a\n1\n")
    (workdir / "t.jsonl").write_text('{"a": 1}\n')
    (workdir / "schema.json").write_text('{"type": "nope"}')
    jsonl = {"kind": "jsonl", "path": str(workdir / "t.jsonl")}
    echo = {"worker": "command", "worker_options": {"command": "echo {{ a }}"}}
    return [
        (["--sql", "select 1", "--command", "echo"],
         {"source": {"kind": "sql", "query": "select 1"}, **echo}, "a sql source needs «source.db_url»", "sql"),
        (["--csv", "t.csv", "--delimiter", ";;", "--command", "echo"],
         {"source": {"kind": "csv", "path": str(workdir / "t.csv"), "delimiter": ";;"}, **echo},
         "«source.delimiter» must be one character, got ';;'", "csv"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--timeout", "0"],
         {"source": jsonl, **echo, "timeout_s": 0}, "«timeout_s»: Input should be greater than 0", "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--concurrency", "0"],
         {"source": jsonl, **echo, "concurrency": 0},
         "«concurrency»: Input should be greater than or equal to 1", "jsonl"),
        # options MCP's create_job once lacked (it now publishes every JobSpec field)
        (["--jsonl", "t.jsonl", "--command", "echo", "--rpm", "0"],
         {"source": jsonl, **echo, "rpm": 0}, "«rpm»: Input should be greater than or equal to 1", "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--quota-wait", "0"],
         {"source": jsonl, **echo, "quota_wait_s": 0}, "«quota_wait_s»: Input should be greater than 0", "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--output-schema", "schema.json"],
         {"source": jsonl, **echo, "output_schema": {"type": "nope"}},
         "«output_schema» is not a valid JSON Schema: 'nope' is not valid under any of the given schemas", "jsonl"),
        (["--jsonl", "t.jsonl", "--worker", "command", "--command", " "],
         {"source": jsonl, "worker": "command", "worker_options": {"command": " "}},
         "«worker_options.command» is empty", "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--ok-exit-codes", "0,x"],
         {"source": jsonl, "worker": "command", "worker_options": {"command": "echo", "ok_exit_codes": "0,x"}},
         "command worker: «worker_options.ok_exit_codes»: '0,x' is not a comma list of integers", "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--ok-exit-codes", "0,256"],
         {"source": jsonl, "worker": "command", "worker_options": {"command": "echo", "ok_exit_codes": [0, 256]}},
         "command worker: «worker_options.ok_exit_codes»: exit code 256 is out of range: a process exits with 0 to 255",
         "jsonl"),
        (["--jsonl", "t.jsonl", "--command", "echo", "--ok-exit-codes", "0,5", "--retry-exit-codes", "5"],
         {"source": jsonl, "worker": "command",
          "worker_options": {"command": "echo", "ok_exit_codes": [0, 5], "retry_exit_codes": [5]}},
         "command worker: exit code 5 is in both «worker_options.ok_exit_codes» and «worker_options.retry_exit_codes»",
         "jsonl"),
    ]


def source_cases(workdir: Path) -> list[tuple[list[str], dict[str, Any], str, str, str]]:
    """Sources' own errors, with a hint naming a source field: (flags, spec, message, hint, kind)."""
    data = str(workdir / "t.jsonl")
    echo = {"worker": "command", "worker_options": {"command": "echo"}}
    return [
        (["--jsonl", "t.jsonl", "--key", "id", "--command", "echo"],
         {"source": {"kind": "jsonl", "path": data, "key": "id"}, **echo},
         f"line 1 of {data} has no field 'id' to use as the key; its fields are 'a'",
         "«source.key» must name a field every item has, or leave it out to key by content", "jsonl"),
        (["--files", "*.txt", "--root", "nowhere", "--command", "echo"],
         {"source": {"kind": "files", "glob": "*.txt", "root": "nowhere"}, **echo},
         f"files root {workdir / 'nowhere'} does not exist", "check «source.root» or the glob's directory", "files"),
    ]


@pytest.mark.asyncio
async def test_the_same_bad_input_gives_the_same_message_in_each_callers_words(web, workdir: Path) -> None:  # noqa: F811
    async with mcp_session(workdir) as session:
        for flags, body, template, kind in cases(workdir):
            as_path = name_fields(template)
            as_flag = name_fields(template, lambda path, kind=kind: flag_for(path, kind))
            assert "«" not in as_path and as_path != as_flag

            cli = abp("create", "--name", "bad", *flags, cwd=workdir)
            assert cli.returncode == 1 and cli.stderr.strip() == f"error: {as_flag}", (flags, cli.stderr)

            rest = web.post("/api/jobs", {"name": "bad", **body})
            assert rest.status_code == 422 and rest.json()["error"] == as_path, (body, rest.text)

            mcp = await call_error(session, "create_job", name="bad", **body)
            assert mcp == as_path, (body, mcp)
            assert "--" not in mcp and "--" not in rest.json()["error"]  # no CLI flag outside the CLI
        for flags, body, template, hint, kind in source_cases(workdir):
            as_path, hint_path = name_fields(template), name_fields(hint)
            hint_flag = name_fields(hint, lambda path, kind=kind: flag_for(path, kind))
            assert hint_path != hint_flag

            cli = abp("create", "--name", "bad", *flags, cwd=workdir)
            assert cli.returncode == 1 and cli.stderr.strip() == f"error: {as_path} ({hint_flag})", (flags, cli.stderr)

            rest = web.post("/api/jobs", {"name": "bad", **body})
            assert rest.status_code == 422 and rest.json() == {"error": as_path, "hint": hint_path}, rest.text

            mcp = await call_error(session, "create_job", name="bad", **body)
            assert mcp == f"{as_path} ({hint_path})", (body, mcp)
    assert web.orch.list_jobs() == []  # nothing half-created
