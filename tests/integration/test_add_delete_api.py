"""`abp add` / `abp delete` / `abp prune` over REST (a real server) and MCP (a real `abp mcp` subprocess):
the same service, bad input answered in the caller's words (field names, status codes), nothing half-done."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fixtures.abp import wait_status
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)


def created(web: Web, n: int = 2) -> int:  # noqa: F811
    return web.ok("POST", "/api/jobs", spec(web.workdir, "nap", n=n, prompt="hi {{ name }}"), status=201)["job_id"]


def test_rest_add_units_json_array_and_jsonl(web: Web) -> None:  # noqa: F811
    job = created(web)
    added = web.ok("POST", f"/api/jobs/{job}/units", [{"id": 5, "name": "five"}, {"id": 0, "name": "again"}])
    assert added == {"job_id": job, "added": 1, "duplicates": 1, "status": "CREATED", "started": False,
                     "next": "start"}
    body = '{"id": 6, "name": "six"}\n\n{"id": 7, "name": "seven"}\n'
    response = web.client.post(f"/api/jobs/{job}/units", content=body,
                               headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 200 and response.json()["added"] == 2
    assert web.ok("GET", f"/api/jobs/{job}")["total"] == 5


def test_rest_add_units_start_runs_a_completed_job(web: Web) -> None:  # noqa: F811
    job = created(web)
    web.orch.start(job, skip_test=True)
    wait_status(web.orch, job, {"COMPLETED"})
    added = web.ok("POST", f"/api/jobs/{job}/units?start=true", [{"id": 9, "name": "nine"}])
    assert added["started"] and added["status"] == "RUNNING"
    assert wait_status(web.orch, job, {"COMPLETED"}).completed == 3


def test_rest_add_units_bad_input(web: Web) -> None:  # noqa: F811
    job = created(web)

    def refused(body: object, status: int, **kw: object) -> str:
        response = web.client.post(f"/api/jobs/{job}/units", **(kw or {"json": body}))  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        return str(response.json()["error"])

    assert refused({"id": 1}, 422).startswith("the request body must be a JSON array of items")
    assert refused([{"id": 8, "name": "ok"}, {"id": 9}], 422).startswith("item 2:")
    assert refused([{"id": 8, "name": "ok"}, "text"], 422) == "item 2 is a string, not a JSON object"
    assert refused([], 422) == "no items to add"
    assert refused(None, 400, content=b"{nope", headers={"content-type": "application/json"}).startswith(
        "malformed JSON body")
    ndjson = {"content-type": "application/x-ndjson"}
    jsonl = refused(None, 422, content=b'{"id": 8, "name": "x"}\n{nope\n', headers=ndjson)
    assert jsonl.startswith("line 2 of the request body is not JSON")
    assert refused([{"id": 8, "name": "x"}], 409, params={"start": "true"}, json=[{"id": 8, "name": "x"}]) == (
        f"start applies to a COMPLETED, PAUSED or FAILED job; job {job} is CREATED")
    assert web.client.post("/api/jobs/999/units", json=[{"id": 1}]).status_code == 404
    assert web.ok("GET", f"/api/jobs/{job}")["total"] == 2


def test_rest_delete_and_prune(web: Web) -> None:  # noqa: F811
    done, waiting = created(web), created(web)
    web.orch.start(done, skip_test=True)
    wait_status(web.orch, done, {"COMPLETED"})
    dry = web.ok("POST", "/api/jobs/prune", {"dry_run": True})
    assert [j["job_id"] for j in dry["jobs"]] == [done] and dry["statuses"] == ["COMPLETED", "CANCELLED", "FAILED"]
    bad = web.client.post("/api/jobs/prune", json={"status": ["running"]})
    assert bad.status_code == 422 and "status" in bad.json()["error"]
    bad_age = web.client.post("/api/jobs/prune", json={"older_than": "7 days"})
    assert bad_age.status_code == 422 and "older_than" in bad_age.json()["error"]
    gone = web.client.delete(f"/api/jobs/{done}")  # no body, no content type: DELETE is never a simple request
    assert gone.status_code == 200 and gone.json()["jobs"][0]["deleted"] is True
    assert web.get(f"/api/jobs/{done}").status_code == 404
    assert web.client.delete(f"/api/jobs/{done}").status_code == 404
    web.orch.start(waiting, skip_test=True)
    web.orch.store.jobs.update_job(waiting, status="RUNNING")  # as if its executor were still at it
    refused = web.client.delete(f"/api/jobs/{waiting}")
    assert refused.status_code == 409 and "force" in refused.json()["hint"]
    forced = web.client.delete(f"/api/jobs/{waiting}", params={"force": "true"})
    assert forced.status_code == 200 and forced.json()["jobs"][0]["cancelled"] is True


def test_mcp_add_units_and_delete_job(orch, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    from agentic_batch.spec import JobSpec
    from tests.fixtures.funcs import ref

    (workdir / "items.jsonl").write_text('{"id": 1, "name": "a"}\n')
    job = orch.create(JobSpec(name="mcp-add", source={"kind": "jsonl", "path": str(workdir / "items.jsonl"),
                                                      "key": "id"},
                              worker="python", worker_options={"function": ref("echo")}, prompt="hi {{ name }}"),
                      cwd=workdir).job_id
    (workdir / "more.json").write_text(json.dumps([{"id": 3, "name": "c"}, {"id": 4, "name": "d"}]))

    async def scenario() -> None:
        async with mcp_session(workdir) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert tools["add_units"].input_schema["properties"]["items"]["anyOf"][0]["maxItems"] == 1000
            assert "deleted" in json.dumps(tools["delete_job"].output_schema)
            added = await call(session, "add_units", job_id=job, items=[{"id": 2, "name": "b"}, {"id": 1, "name": "a"}])
            assert (added["added"], added["duplicates"], added["next"]) == (1, 1, "start")
            from_file = await call(session, "add_units", job_id=job, path=str(workdir / "more.json"))
            assert from_file["added"] == 2
            assert await call_error(session, "add_units", job_id=job) == "give items or path (one of them)"
            assert (await call_error(session, "add_units", job_id=job, items=[{"id": 5}])).startswith("item 1:")
            too_many = await call_error(session, "add_units", job_id=job, items=[{"id": i} for i in range(1001)])
            assert "items" in too_many and "1000" in too_many
            assert (await call_error(session, "add_units", job_id=job, items=[{"id": 9, "name": "x"}],
                                     start=True)).startswith("start applies to")
            deleted = await call(session, "delete_job", job_id=job)
            assert deleted["jobs"][0]["job_id"] == job and deleted["jobs"][0]["units"] == 4
            assert (await call_error(session, "delete_job", job_id=job)).startswith(f"no job '{job}'")

    asyncio.run(scenario())
    assert orch.list_jobs() == []
