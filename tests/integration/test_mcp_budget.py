"""What the MCP tools cost an assistant's context, measured on a real stdio server: the whole
create -> test -> approve -> wait -> results flow, a results page of large rows, list_sources, and
the arguments and files the tools refuse.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession

from tests.fixtures.funcs import ref
from tests.fixtures.mcp_client import call, call_error, mcp_session

pytestmark = pytest.mark.timeout(120)

#: The flow's whole budget of tool-result text (issue 11: 14 K characters before).
FLOW_BUDGET = 8_000
RESULT_CAP = 25_000


async def text_of(session: ClientSession, tool: str, **arguments: Any) -> tuple[dict[str, Any], int]:
    """A successful call's structured content and the length of the text a model reads."""
    result = await session.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    return json.loads(text), len(text)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.asyncio
async def test_the_whole_flow_fits_in_8k_characters_of_tool_results(workdir: Path) -> None:
    data = write_rows(workdir / "tickets.csv", [{"id": i, "title": f"ticket number {i}", "body": "lorem " * 20}
                                               for i in range(1, 21)])
    sizes: dict[str, int] = {}
    async with mcp_session(workdir) as session:
        created, sizes["create_job"] = await text_of(
            session, "create_job", name="tickets", source={"kind": "csv", "path": str(data), "key": "id"},
            worker="python", worker_options={"function": ref("echo")},
            prompt="Classify this ticket: {{ title }}\n\n{{ body }}")
        job = created["job_id"]
        tested, sizes["start_job(test)"] = await text_of(session, "start_job", job_id=job)
        assert tested["test_passed"] is True
        started, sizes["start_job(approve)"] = await text_of(session, "start_job", job_id=job, approve=True)
        status, sizes["get_job_status"] = await text_of(session, "get_job_status", job_id=job, wait_seconds=30)
        assert status["status"] == "COMPLETED", status
        page, sizes["get_results"] = await text_of(session, "get_results", job_id=job)
        assert page["returned"] == 20 and page["rows"][0]["output"].startswith("1:Classify")
    total = sum(sizes.values())
    assert total < FLOW_BUDGET, f"{total} characters: {sizes}"


@pytest.mark.asyncio
async def test_every_result_is_capped_and_says_how_to_get_the_rest(workdir: Path) -> None:
    data = write_rows(workdir / "big.csv", [{"id": i, "text": f"row {i} " + "x" * 1200} for i in range(1, 201)])
    async with mcp_session(workdir) as session:
        job = (await call(session, "create_job", name="big", source={"kind": "csv", "path": str(data), "key": "id"},
                          worker="python", worker_options={"function": ref("echo")},
                          prompt="{{ text }}"))["job_id"]
        await call(session, "start_job", job_id=job, skip_test=True)
        assert (await call(session, "get_job_status", job_id=job, wait_seconds=60))["status"] == "COMPLETED"

        seen: list[int] = []
        offset: int | None = 0
        calls = 0
        while offset is not None:
            page, size = await text_of(session, "get_results", job_id=job, offset=offset, limit=200,
                                       max_chars=5000)
            assert size <= RESULT_CAP + 500, size
            if page["next_offset"] is not None:
                assert f"offset={page['next_offset']}" in page["note"] and "truncated" in page["note"]
            seen += [row["unit"] for row in page["rows"]]
            offset, calls = page["next_offset"], calls + 1
        assert len(seen) == len(set(seen)) == 200 and calls > 1  # every row once, over several pages

        unit, size = await text_of(session, "get_unit", job_id=job, unit=seen[0], max_chars=100_000)
        assert size <= RESULT_CAP + 500
        listed, size = await text_of(session, "list_jobs", limit=200)
        assert size <= RESULT_CAP + 500 and listed["jobs"][0]["id"] == job


@pytest.mark.asyncio
async def test_list_sources_is_one_line_per_kind_with_details_on_request(workdir: Path) -> None:
    async with mcp_session(workdir) as session:
        brief, size = await text_of(session, "list_sources")
        assert size < 2_500, size
        assert set(brief["sources"]) == {"files", "csv", "json", "jsonl", "sql", "python"}
        assert {"command", "python", "claude", "openai", "anthropic"} <= set(brief["workers"])
        assert all(isinstance(line, str) and "\n" not in line for line in brief["workers"].values())
        assert "command*" in brief["workers"]["command"]
        python = await call(session, "list_sources", kind="python")
        assert python["worker"]["options"]["function"]["required"] is True
        csv_source = await call(session, "list_sources", kind="csv")
        assert csv_source["source"]["fields"]["path"]["required"] is True
        assert "unknown kind 'robot'" in await call_error(session, "list_sources", kind="robot")


@pytest.mark.asyncio
async def test_unknown_arguments_are_refused_and_nothing_is_created(workdir: Path) -> None:
    data = write_rows(workdir / "rows.csv", [{"id": 1, "title": "a"}])
    spec = {"name": "x", "source": {"kind": "csv", "path": str(data)}, "worker": "python",
            "worker_options": {"function": ref("echo")}, "prompt": "{{ title }}"}
    async with mcp_session(workdir) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert all(t.input_schema.get("additionalProperties") is False for t in tools.values())
        message = await call_error(session, "create_job", **spec, bogus=1)
        assert message.startswith("create_job has no argument 'bogus' (it takes ") and "\n" not in message
        assert "concurency" in await call_error(session, "create_job", **spec, concurency=2)
        assert (await call(session, "list_jobs"))["jobs"] == []
        assert "has no argument 'verbose'" in await call_error(session, "get_job_status", job_id=1, verbose=True)


@pytest.mark.asyncio
async def test_export_refuses_an_existing_file_or_a_directory(workdir: Path, tmp_path: Path) -> None:
    data = write_rows(workdir / "rows.csv", [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}])
    precious = tmp_path / "precious.csv"
    precious.write_text("do not lose me\n")
    async with mcp_session(workdir) as session:
        job = (await call(session, "create_job", name="e", source={"kind": "csv", "path": str(data)},
                          worker="python", worker_options={"function": ref("echo")},
                          prompt="{{ title }}"))["job_id"]
        await call(session, "start_job", job_id=job, skip_test=True)
        await call(session, "get_job_status", job_id=job, wait_seconds=30)
        refused = await call_error(session, "export_results", job_id=job, path=str(precious))
        assert refused == f"{precious} already exists (choose another path, or overwrite it on purpose)"
        assert precious.read_text() == "do not lose me\n"
        directory = await call_error(session, "export_results", job_id=job, path=str(tmp_path))
        assert directory == f"cannot write {tmp_path}: it is a directory (give a file path)"
        done = await call(session, "export_results", job_id=job, path=str(precious), overwrite=True)
        assert done["rows"] == 2 and "do not lose me" not in precious.read_text()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert not tools["export_results"].annotations.idempotent_hint  # type: ignore[union-attr]
