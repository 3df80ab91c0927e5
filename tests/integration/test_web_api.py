"""The REST API through HTTP (a real uvicorn server, the real store, real detached executors)."""

from __future__ import annotations

import csv
import io
import json

from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)


def test_create_test_approve_and_read_everything(web: Web) -> None:  # noqa: F811
    created = web.ok("POST", "/api/jobs", spec(web.workdir, "chatty", n=4, key="name", prompt="count {{ name }}"),
                     status=201)
    job = created["job_id"]
    assert created["units"] == 4 and created["previews"][0] == "count item-0"
    listed = web.ok("GET", "/api/jobs?status=created&q=web-")
    assert [j["id"] for j in listed["items"]] == [job] and listed["total"] == 1
    assert web.ok("GET", "/api/jobs?status=running")["items"] == []

    report = web.ok("POST", f"/api/jobs/{job}/start")  # test first: the first unit runs now
    assert report["status"] == "COMPLETED" and "42" in report["output"]
    assert web.ok("GET", f"/api/jobs/{job}")["status"] == "TESTING"
    assert web.ok("GET", f"/api/jobs/{job}/test")["number"] == report["number"] == 1
    assert web.ok("POST", f"/api/jobs/{job}/reject")["status"] == "CREATED"
    web.ok("POST", f"/api/jobs/{job}/start")
    assert web.ok("POST", f"/api/jobs/{job}/start", {"reject": True})["status"] == "CREATED"
    web.ok("POST", f"/api/jobs/{job}/start")
    assert web.ok("POST", f"/api/jobs/{job}/approve")["status"] == "RUNNING"
    final = wait_status(web.orch, job, {"COMPLETED", "FAILED"})
    assert final.status == "COMPLETED"

    status = web.ok("GET", f"/api/jobs/{job}")
    assert (status["completed"], status["total"], status["cost_usd"]) == (4, 4, 0.06)  # 3 test runs kept
    assert status["executor"]["state"] in ("running", "stopped")
    page = web.ok("GET", f"/api/jobs/{job}/units?limit=2&sort=cost&order=desc")
    assert page["total"] == 4 and len(page["items"]) == 2 and page["items"][0]["cost_usd"] == 0.03  # the test unit
    unit = web.ok("GET", f"/api/jobs/{job}/units/{page['items'][0]['number']}")
    assert unit["prompt"] == "count item-0" and unit["tokens_in"] == 360 and "events" not in unit
    by_key = web.ok("GET", f"/api/jobs/{job}/units/key:{unit['key']}")
    assert by_key["number"] == unit["number"]

    events = web.ok("GET", f"/api/jobs/{job}/units/{unit['number']}/events?limit=2")
    assert [e["kind"] for e in events["items"]] == ["start", "assistant"] and events["more"]
    rest = web.ok("GET", f"/api/jobs/{job}/units/{unit['number']}/events?after={events['next_after']}")
    assert [e["kind"] for e in rest["items"]][:2] == ["tool_use", "tool_result"] and not rest["more"]
    job_events = web.ok("GET", f"/api/jobs/{job}/events?limit=1000")["items"]
    assert {e["unit"] for e in job_events} == {u["number"] for u in web.ok("GET", f"/api/jobs/{job}/units")["items"]}

    logs = web.ok("GET", f"/api/jobs/{job}/logs?limit=2")
    assert len(logs["items"]) == 2 and logs["items"][0]["id"] > logs["items"][1]["id"]  # newest first
    older = web.ok("GET", f"/api/jobs/{job}/logs?before={logs['next_before']}&limit=100")
    assert all(item["id"] < logs["items"][1]["id"] for item in older["items"])
    assert web.ok("GET", f"/api/jobs/{job}/logs?q=COMPLETED&level=info")["items"]
    assert web.ok("GET", f"/api/jobs/{job}/logs?level=error")["items"] == []
    following = web.ok("GET", f"/api/jobs/{job}/logs?after=0&limit=1")
    assert following["items"][0]["id"] == following["next_after"]

    series = web.ok("GET", f"/api/jobs/{job}/timeseries?buckets=10")
    assert sum(p["completed"] for p in series["points"]) == 4
    assert series["points"][-1]["cost_total"] == 0.06
    assert web.ok("GET", f"/api/jobs/{job}/active") == []
    stats = web.ok("GET", "/api/stats")
    assert stats["jobs"]["COMPLETED"] == 1 and stats["units"]["COMPLETED"] == 4 and stats["cost_usd"] == 0.06
    assert web.ok("GET", "/api/health")["ok"] is True

    with (web.workdir / "items.jsonl").open("a") as items:  # the source grew: sync adds only the new item
        items.write(json.dumps({"id": 9, "name": "item-9"}) + "\n")
    assert web.ok("POST", f"/api/jobs/{job}/sync") == {"job_id": job, "added": 1, "existing": 4, "status": "PAUSED",
                                                       "next": "resume"}
    assert web.ok("GET", f"/api/jobs/{job}")["pending"] == 1


def test_exports_stream_every_format(web: Web) -> None:  # noqa: F811
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", rows=[{"id": i, "fail": i == 1}
                                                                        for i in range(3)]), status=201)["job_id"]
    web.ok("POST", f"/api/jobs/{job}/start", {"skip_test": True})
    wait_status(web.orch, job, {"FAILED"})

    jsonl = web.get(f"/api/jobs/{job}/results?format=jsonl")
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert jsonl.headers["content-disposition"] == f'attachment; filename="job-{job}-results.jsonl"'
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [(0, "COMPLETED"), (1, "FAILED"), (2, "COMPLETED")]
    as_json = web.get(f"/api/jobs/{job}/results?format=json")
    assert as_json.headers["content-type"] == "application/json" and json.loads(as_json.text) == rows
    as_csv = web.get(f"/api/jobs/{job}/results?format=csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["status"] for r in table] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "marked to fail" in table[1]["error"]
    failed_only = web.get(f"/api/jobs/{job}/results?format=jsonl&status=failed").text.splitlines()
    assert len(failed_only) == 1
    with web.client.stream("GET", f"/api/jobs/{job}/results?format=jsonl") as streamed:
        assert streamed.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered whole
        assert b"".join(streamed.iter_bytes()).decode() == jsonl.text


def test_steer_a_running_job_stop_resume_cancel_retry(web: Web) -> None:  # noqa: F811
    hold = web.workdir / "hold"  # while it exists, units wait: the job stays RUNNING however loaded the host
    rows = [{"id": i, "name": f"n{i}", "sleep": 0.4, "hold": str(hold)} for i in range(8)]
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "chatty", rows=rows, concurrency=2), status=201)["job_id"]
    assert web.ok("POST", f"/api/jobs/{job}/start", {"skip_test": True})["status"] == "RUNNING"
    web.ok("POST", f"/api/jobs/{job}/stop")
    paused = wait_status(web.orch, job, {"PAUSED"})
    assert paused.pending > 0
    web.ok("PUT", f"/api/jobs/{job}/prompt", {"prompt": "now {{ name }}"})
    hold.touch()  # (CI once saw the resumed executor finish every unit before resume answered)
    assert web.ok("POST", f"/api/jobs/{job}/resume")["status"] == "RUNNING"
    assert web.ok("POST", f"/api/jobs/{job}/cancel")["status"] == "CANCELLED"
    hold.unlink()
    # Let the cancelled executor exit first: a retry racing its exit is an engine matter, not the API's.
    wait_until(lambda: web.ok("GET", f"/api/jobs/{job}")["executor"]["state"] != "running", 30, "executor exit")
    assert web.post(f"/api/jobs/{job}/retry").status_code == 409  # nothing failed
    assert web.ok("POST", f"/api/jobs/{job}/retry", {"include_cancelled": True})["status"] == "RUNNING"
    done = wait_status(web.orch, job, {"COMPLETED"})
    assert done.completed == 8
    later = web.ok("GET", f"/api/jobs/{job}/units?status=completed&sort=seq&order=desc&limit=1")["items"][0]
    assert web.ok("GET", f"/api/jobs/{job}/units/{later['number']}")["prompt"] == "now n7"


def test_retry_and_cancel_one_unit(web: Web) -> None:  # noqa: F811
    rows = [{"id": 0}, {"id": 1, "fail": True}, {"id": 2}]
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", rows=rows), status=201)["job_id"]
    units = {u["key"]: u["number"] for u in web.ok("GET", f"/api/jobs/{job}/units")["items"]}
    assert web.post(f"/api/jobs/{job}/units/{units['1']}/retry").status_code == 409  # job not started
    cancelled = web.ok("POST", f"/api/jobs/{job}/units/{units['2']}/cancel")
    assert cancelled["unit"]["status"] == "CANCELLED" and cancelled["job"]["cancelled"] == 1
    assert web.post(f"/api/jobs/{job}/units/{units['2']}/cancel").status_code == 409

    web.ok("POST", f"/api/jobs/{job}/start", {"skip_test": True})
    wait_status(web.orch, job, {"FAILED"})
    assert web.post(f"/api/jobs/{job}/units/{units['0']}/retry").status_code == 409  # it completed
    again = web.ok("POST", f"/api/jobs/{job}/units/{units['1']}/retry")
    assert again["unit"]["status"] in ("PENDING", "RUNNING", "FAILED") and again["job"]["status"] == "RUNNING"
    wait_status(web.orch, job, {"FAILED"})
    assert web.ok("GET", f"/api/jobs/{job}/units/{units['1']}")["attempts"] == 2
    revived = web.ok("POST", f"/api/jobs/{job}/units/{units['2']}/retry")
    assert revived["unit"]["status"] in ("PENDING", "RUNNING", "COMPLETED")
    wait_status(web.orch, job, {"FAILED"})
    assert web.ok("GET", f"/api/jobs/{job}/units/{units['2']}")["status"] == "COMPLETED"


def test_errors_are_json_with_the_right_status(web: Web) -> None:  # noqa: F811
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some"), status=201)["job_id"]
    units, logs = f"/api/jobs/{job}/units", f"/api/jobs/{job}/logs"
    cases = [
        ("GET", "/api/jobs/999", None, 404), ("GET", "/api/jobs/nosuch/units", None, 404),
        ("POST", "/api/jobs/999/stop", {}, 404), ("GET", f"{units}/99999", None, 404),
        ("GET", f"{units}/99999/events", None, 404), ("GET", "/api/jobs/999/results", None, 404),
        ("GET", "/api/nothing-here", None, 404),
        ("POST", f"/api/jobs/{job}/approve", {}, 409), ("POST", f"/api/jobs/{job}/stop", {}, 409),
        ("POST", f"/api/jobs/{job}/resume", {}, 409), ("GET", f"/api/jobs/{job}/test", None, 409),
        ("POST", "/api/jobs", {"name": "x"}, 422), ("POST", "/api/jobs", [1, 2], 422),
        ("POST", "/api/jobs", {**spec(web.workdir, "fail_some"), "concurrency": 0}, 422),
        ("POST", "/api/jobs", {**spec(web.workdir, "fail_some"), "prompt": "{{ nope }}"}, 422),
        ("POST", "/api/jobs", {**spec(web.workdir, "fail_some"), "bogus": 1}, 422),
        ("GET", "/api/jobs?status=bogus", None, 422), ("GET", "/api/jobs?limit=-5", None, 422),
        ("GET", "/api/jobs?limit=abc", None, 422), ("GET", f"{units}?limit=-1", None, 422),
        ("GET", f"{units}?limit=100000", None, 422), ("GET", f"{units}?offset=-1", None, 422),
        ("GET", f"{units}?status=done", None, 422), ("GET", f"{units}?sort=payload", None, 422),
        ("GET", f"{units}?order=sideways", None, 422), ("GET", f"/api/jobs/{job}/results?format=xml", None, 422),
        ("GET", f"/api/jobs/{job}/results?status=nope", None, 422), ("GET", f"{logs}?level=loud", None, 422),
        ("GET", f"{logs}?after=-1", None, 422), ("GET", f"/api/jobs/{job}/timeseries?buckets=0", None, 422),
        ("GET", f"/api/jobs/{job}/events?after=-3", None, 422), ("GET", f"/api/jobs/{job}/active?limit=0", None, 422),
        ("POST", f"/api/jobs/{job}/start", {"approve": True, "reject": True}, 422),
        ("POST", f"/api/jobs/{job}/start", {"skip": True}, 422), ("PUT", f"/api/jobs/{job}/prompt", {}, 422),
        ("PUT", f"/api/jobs/{job}/prompt", {"prompt": "  "}, 422),
    ]
    for method, path, body, expected in cases:
        response = web.client.request(method, path, json=body) if body is not None else web.client.request(method, path)
        assert response.status_code == expected, f"{method} {path}: {response.status_code} {response.text}"
        payload = response.json()
        assert set(payload) == {"error", "hint"} and payload["error"], (path, payload)
    malformed = [("POST", "/api/jobs"), ("POST", f"/api/jobs/{job}/start"), ("PUT", f"/api/jobs/{job}/prompt")]
    for method, path in malformed:
        response = web.client.request(method, path, content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 400 and "malformed JSON" in response.json()["error"], response.text
    missing = web.post("/api/jobs", {"name": "x", "source": {"kind": "jsonl", "path": "absent.jsonl"},
                                     "worker": "python", "worker_options": {"function": "os:getcwd"}})
    assert missing.status_code == 422 and "absent.jsonl" in missing.json()["error"]
    assert web.ok("GET", f"/api/jobs/{job}")["status"] == "CREATED"  # nothing changed by all that


def test_pages_docs_and_openapi(web: Web) -> None:  # noqa: F811
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", n=2), status=201)["job_id"]
    unit = web.ok("GET", f"/api/jobs/{job}/units")["items"][0]["number"]
    for path in ("/", "/?status=created&q=web", f"/jobs/{job}", f"/jobs/{job}/units/{unit}", "/docs"):
        page = web.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text.replace(web.url, "") and "cdn" not in page.text.lower()
    missing = web.get("/jobs/999", headers={"accept": "text/html"})
    assert missing.status_code == 404 and "no job" in missing.text
    assert web.get("/static/abp.js").status_code == 200
    schema = web.ok("GET", "/openapi.json")
    assert "/api/jobs/{job}/units" in schema["paths"] and "JobSpec" in schema["components"]["schemas"]
    body = schema["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobSpec"}
    assert "SourceSpec" in schema["components"]["schemas"]
    docs = web.get("/docs").text
    assert "/api/jobs/{job}/results" in docs and "workdir" in docs


def test_openapi_names_every_error_and_the_words_filters_accept(web: Web) -> None:  # noqa: F811
    """A client (or schemathesis) reading /openapi.json meets no undocumented answer, and the status
    filter's pattern accepts exactly what the service does."""
    import re

    from agentic_batch.errors import InvalidSpec
    from agentic_batch.service.browse import JOB_STATUSES, parse_statuses

    document = web.ok("GET", "/openapi.json")
    assert set(document["components"]["schemas"]["Error"]["properties"]) == {"error", "hint"}
    start = document["paths"]["/api/jobs/{job}/start"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "422"} <= set(start)
    assert start["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "409" in document["paths"]["/api/jobs/{job}/test"]["get"]["responses"]
    status = next(p for p in document["paths"]["/api/jobs"]["get"]["parameters"] if p["name"] == "status")
    pattern = status["schema"]["pattern"]
    for value in ["", "running", "Running, PAUSED", "running,", " , ", "bogus", "running paused", "run"]:
        try:
            parse_statuses(value, JOB_STATUSES, "job")
            accepted = True
        except InvalidSpec:
            accepted = False
        assert bool(re.match(pattern, value)) == accepted, value
    level = next(p for p in document["paths"]["/api/jobs/{job}/logs"]["get"]["parameters"] if p["name"] == "level")
    assert level["schema"]["enum"] == ["debug", "info", "warning", "error"]
    for word in ("created", "bogus"):  # the service still answers in its own words
        response = web.get("/api/jobs", params={"status": word})
        assert response.status_code == (200 if word == "created" else 422)
    assert "unknown job status 'bogus'" in web.get("/api/jobs", params={"status": "bogus"}).json()["error"]


def test_openapi_declares_every_answer_and_what_a_job_spec_needs(web: Web) -> None:  # noqa: F811
    """Every JSON answer has a schema (the service's read models, with their enums); the units list's
    sort and order are enums; JobSpec says which fields each source kind and each worker kind needs."""
    document = web.ok("GET", "/openapi.json")
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                content = answer.get("content", {}).get("application/json")
                if content is not None and path.startswith("/api/"):
                    assert content.get("schema"), (method, path, status)
    job = document["paths"]["/api/jobs/{job}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert job == {"$ref": "#/components/schemas/JobView"}
    assert schemas["JobStatus"]["enum"][:2] == ["CREATING", "CREATED"] and "PENDING" in schemas["UnitStatus"]["enum"]
    params = {p["name"]: p["schema"] for p in document["paths"]["/api/jobs/{job}/units"]["get"]["parameters"]}
    assert params["order"]["enum"] == ["asc", "desc"] and "cost" in params["sort"]["enum"]
    csv_rule = next(r for r in schemas["SourceSpec"]["allOf"] if r["if"]["properties"]["kind"]["const"] == "csv")
    assert csv_rule["then"]["required"] == ["path"]
    spec = schemas["JobSpec"]
    assert "command" in spec["properties"]["worker"]["enum"]
    branches = {b["properties"]["worker"]["const"]: b for b in spec["anyOf"]}
    assert set(branches) == set(spec["properties"]["worker"]["enum"])
    assert branches["command"]["required"] == ["worker_options"]  # the default: worker may be left out
    assert branches["openai"]["required"] == ["worker", "worker_options"]
    assert branches["claude"]["required"] == ["worker"]  # every claude option has a default
    assert branches["mcp"]["properties"]["worker_options"] == {"$ref": "#/components/schemas/MCPCallOptions"}
    assert schemas["CommandOptions"]["required"] == ["command"]
