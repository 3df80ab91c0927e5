"""An isolated job's changes over REST and MCP (the same service as `abp diff|review|apply|clean`):
the changes list, a unit's diff, marks, apply with its summary, clean, and bad input answered in
the caller's words (field names, status codes) with nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.git_repos import edited_job, make_repo, sh
from tests.fixtures.mcp_client import call, call_error, mcp_session
from tests.fixtures.web import Web, web  # noqa: F401  (fixture)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


def test_rest_changes_diff_review_apply_clean(web: Web, repo: Path) -> None:  # noqa: F811
    job = edited_job(web.orch, repo)
    changes = web.ok("GET", f"/api/jobs/{job}/changes")
    assert [u["number"] for u in changes["units"]] == [1, 2, 3, 4, 5] and changes["changed"] == 4
    assert changes["units"][0]["branch"] == f"abp/{job}/1-a.py" and changes["units"][3]["commit"] is None
    diff = web.ok("GET", f"/api/jobs/{job}/units/1/diff")
    assert diff["number"] == 1 and [f["path"] for f in diff["changes"]] == ["a.py", "shared.txt"]
    assert "+a = 2" in diff["patch"] and diff["review"] is None
    assert web.get(f"/api/jobs/{job}/units/99/diff").status_code == 404
    marked = web.ok("POST", f"/api/jobs/{job}/review", {"units": [1, 3], "review": "accepted"})
    assert marked == {"job_id": job, "review": "accepted", "units": [1, 3]}
    assert web.ok("GET", f"/api/jobs/{job}/units/3/diff")["review"] == "accepted"
    applied = web.ok("POST", f"/api/jobs/{job}/apply", {"accepted": True, "squash": True})
    assert applied["applied"] == [1, 3] and applied["branch"] == f"abp/{job}/applied" and len(applied["commits"]) == 1
    assert applied["not_selected"] == [2, 4, 5]
    rest = web.ok("POST", f"/api/jobs/{job}/apply")
    assert rest["already_applied"] == [1, 3] and rest["conflicts"][0] == {
        "number": 2, "files": ["shared.txt"], "with_units": [1], "with_target": False}
    cleaned = web.ok("POST", f"/api/jobs/{job}/clean")
    assert cleaned["branches_removed"] == 5 and cleaned["kept"] == [f"abp/{job}/applied"]


def test_rest_bad_input_names_the_field_and_creates_nothing(web: Web, repo: Path) -> None:  # noqa: F811
    job = edited_job(web.orch, repo)
    before = sh(repo, "for-each-ref")
    cases = [({"onto": "nope"}, 422, "onto: no branch 'nope'"),
             ({"units": "1,40"}, 422, f"units: job {job} has no unit 40"),
             ({"units": "x"}, 422, None),  # the schema's pattern refuses it
             ({"units": "1", "accepted": True}, 422, "give either units or accepted, not both"),
             ({"accepted": True}, 409, f"job {job} has no accepted units")]
    for body, status, message in cases:
        response = web.post(f"/api/jobs/{job}/apply", body)
        assert response.status_code == status, (body, response.text)
        if message:
            assert response.json()["error"].startswith(message), response.json()
    (repo / "a.py").write_text("mine\n")
    dirty = web.post(f"/api/jobs/{job}/apply", {"onto": "main"})
    assert dirty.status_code == 422 and "checked out in" in dirty.json()["error"]
    assert sh(repo, "for-each-ref") == before
    web.orch.store.jobs.update_job(job, status="RUNNING")
    assert web.post(f"/api/jobs/{job}/clean").status_code == 409


def test_openapi_documents_the_change_routes(web: Web) -> None:  # noqa: F811
    paths = web.ok("GET", "/openapi.json")["paths"]
    diff = paths["/api/jobs/{job}/units/{unit}/diff"]["get"]
    assert diff["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/UnitDiff")
    assert {"404", "409"} <= set(diff["responses"])
    assert {"/api/jobs/{job}/changes", "/api/jobs/{job}/review", "/api/jobs/{job}/apply",
            "/api/jobs/{job}/clean"} <= set(paths)


@pytest.mark.asyncio
async def test_mcp_get_diff_review_apply_clean(orch: Orchestrator, repo: Path, tmp_path: Path) -> None:
    job = edited_job(orch, repo)
    async with mcp_session(tmp_path) as session:
        listing = await call(session, "get_diff", job_id=job)
        assert [u["number"] for u in listing["units"]] == [1, 2, 3, 4, 5]
        assert "commit" not in listing["units"][3]  # empty values left out
        one = await call(session, "get_diff", job_id=job, unit=1, max_chars=100)
        assert len(one["patch"]) == 100 and "cut to 100" in one["note"]
        marks = await call(session, "review_changes", job_id=job, units="3", review="accepted")
        assert marks["units"] == [3]
        applied = await call(session, "apply_changes", job_id=job)
        assert applied["applied"] == "1, 3" and applied["unchanged"] == "4" and applied["unfinished"] == "5"
        assert applied["summary"] == f"applied 2 unit(s) onto abp/{job}/applied; 1 skipped with conflicts"
        assert applied["conflicts"][0]["with_units"] == [1]
        error = await call_error(session, "apply_changes", job_id=job, onto="nope")
        assert error.startswith("onto: no branch 'nope'")
        assert (await call(session, "clean_job", job_id=job))["branches_removed"] == 5
