"""An `mcp` worker job made and run through REST and through MCP `create_job`, calling a streamable-HTTP
MCP server (tests/fixtures/mcp_unit_server.py --http): the arguments given as a JSON object (REST and
MCP) keep their types, the test unit answers, the executors run the rest over one shared session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.abp import wait_status
from tests.fixtures.mcp_client import call, mcp_session
from tests.fixtures.mcp_servers import http_server, write_config
from tests.fixtures.web import web  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(240)

ROWS = [{"id": "a", "word": "ann", "n": 1}, {"id": "b", "word": "bob", "n": 2}, {"id": "c", "word": "cat", "n": 3}]
EXPECTED = {"a": "ANN", "b": "BOB BOB", "c": "CAT CAT CAT"}


def job_body(workdir: Path, url: str, name: str) -> dict[str, Any]:
    (workdir / "words.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    config = write_config(workdir / "servers.json", {"web": {"type": "http", "url": url}})
    return {"name": name, "source": {"kind": "jsonl", "path": str(workdir / "words.jsonl"), "key": "id"},
            "worker": "mcp", "concurrency": 3,
            "worker_options": {"mcp_config": str(config), "tool": "web.shout",
                               "arguments": {"text": "{{ word }}", "times": "{{ n }}"}}}


def outputs(orch: Any, job_id: int) -> dict[str, str]:
    return {row["key"]: row["output"] for row in orch.results(job_id)}


@pytest.mark.asyncio
async def test_rest_and_mcp_make_and_run_an_mcp_job_over_http(web, workdir: Path) -> None:  # noqa: F811
    with http_server() as (url, _):
        created = web.ok("POST", "/api/jobs", job_body(workdir, url, "via-rest"), status=201)
        job = created["job_id"]
        tested = web.ok("POST", f"/api/jobs/{job}/start")  # the first unit, as a test
        assert tested["status"] == "COMPLETED" and tested["output"] == "ANN", tested
        web.ok("POST", f"/api/jobs/{job}/approve")
        assert wait_status(web.orch, job, {"COMPLETED", "FAILED", "PAUSED"}, timeout=120).status == "COMPLETED"
        assert outputs(web.orch, job) == EXPECTED

        async with mcp_session(workdir) as session:
            made = await call(session, "create_job", **job_body(workdir, url, "via-mcp"))
            await call(session, "start_job", job_id=str(made["job_id"]), skip_test=True)
        assert wait_status(web.orch, made["job_id"], {"COMPLETED", "FAILED", "PAUSED"},
                           timeout=120).status == "COMPLETED"
        assert outputs(web.orch, made["job_id"]) == EXPECTED
        assert web.orch.results(made["job_id"])[1]["data.result"] == "BOB BOB"
