"""Failed units grouped by cause, through every interface: a 5,000-unit job run by a real executor
whose units fail in three ways (each message with its own numbers, paths, hex and quoted values)
shows three groups; `retry --error N` re-runs one group only; bad selectors are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agentic_batch.errors import AbpError
from agentic_batch.spec import JobSpec
from agentic_batch.web.app import create_app
from agentic_batch.web.config import WebConfig
from agentic_batch.web.server import serve_in_thread
from tests.fixtures.abp import abp, wait_status
from tests.fixtures.funcs import ref

pytestmark = pytest.mark.timeout(300)

N = 5000
SIGNATURES = {"cannot open <str>: no such file", "unit-<n> timed out after <n>s waiting for lock <hex>",
              "KeyError: <str>"}


def failing_job(orch, workdir: Path, n: int = N) -> int:  # type: ignore[no-untyped-def]
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    spec = JobSpec(name="causes", source={"kind": "jsonl", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref("fail_by_cause")}, concurrency=16, max_retries=0)
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=240)
    assert final.status == "FAILED" and final.failed == 3 * n // 4, final
    return job


def test_5000_units_with_three_causes_show_three_groups_everywhere(orch, workdir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = failing_job(orch, workdir)
    summary = orch.error_summary(job)
    assert summary.failed == 3750 and len(summary.groups) == 3
    assert {g.signature for g in summary.groups} == SIGNATURES
    assert [g.count for g in summary.groups] == [1250, 1250, 1250] and [g.group for g in summary.groups] == [1, 2, 3]
    by_signature = {g.signature: g for g in summary.groups}
    key_error = by_signature["KeyError: <str>"]
    assert key_error.error_class == "retryable" and [u.number for u in key_error.units] == [4, 8, 12]
    assert key_error.example == "KeyError: 'field_3'"
    assert by_signature["cannot open <str>: no such file"].error_class == "permanent"

    cli = abp("errors", str(job), cwd=workdir)
    assert cli.returncode == 0, cli.stderr
    assert "3750 failed unit(s) in 3 group(s)" in cli.stdout and "KeyError: <str>" in cli.stdout
    as_json = json.loads(abp("errors", str(job), "--json", "--examples", "1", cwd=workdir).stdout)
    assert len(as_json["groups"]) == 3 and all(len(g["units"]) == 1 for g in as_json["groups"])

    with serve_in_thread(create_app(orch, WebConfig(cwd=workdir))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        rest = client.get(f"/api/jobs/{job}/errors", params={"examples": 2})
        assert rest.status_code == 200 and rest.json() == json.loads(orch.error_summary(job, examples=2)
                                                                     .model_dump_json())
        assert client.get(f"/api/jobs/{job}/errors", params={"examples": 99}).status_code == 422
        assert client.get("/api/jobs/999999/errors").status_code == 404
        bad = client.post(f"/api/jobs/{job}/retry", json={"error_group": 7})
        assert bad.status_code == 422 and bad.json()["error"] == (
            f"job {job} has 3 error groups; error_group 7 is not one of them")
        both = client.post(f"/api/jobs/{job}/retry", json={"error_group": 1, "include_cancelled": True})
        assert both.status_code == 422 and "error_group or include_cancelled, not both" in both.json()["error"]
        assert client.post(f"/api/jobs/{job}/retry", json={"error_group": 0}).status_code == 422

    flag = tmp_path / "fixed"
    flag.write_text("")
    monkeypatch.setenv("ABP_TEST_FLAG", str(flag))  # the KeyError cause is fixed; the executor inherits it
    retried = abp("retry", str(job), "--error", str(key_error.group), "--json", cwd=workdir,
                  env={"ABP_TEST_FLAG": str(flag)})
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["retried"] == 1250
    final = wait_status(orch, job, {"FAILED", "COMPLETED"}, timeout=240)
    assert final.completed == 2500 and final.failed == 2500
    after = orch.error_summary(job)
    assert {g.signature for g in after.groups} == SIGNATURES - {"KeyError: <str>"}


def test_bad_selectors_in_each_interfaces_words(orch, workdir: Path) -> None:
    job = failing_job(orch, workdir, n=8)
    out_of_range = abp("retry", str(job), "--error", "9", cwd=workdir)
    assert out_of_range.returncode == 1
    assert out_of_range.stderr.strip().startswith(f"error: job {job} has 3 error groups; --error 9 is not one of them")
    zero = abp("retry", str(job), "--error", "0", cwd=workdir)
    assert zero.returncode == 1 and "--error must be a group number" in zero.stderr
    both = abp("retry", str(job), "--error", "1", "--cancelled", cwd=workdir)
    assert both.returncode == 1 and "error: give --error or --cancelled, not both" in both.stderr
    text = abp("retry", str(job), "--error", "x", cwd=workdir)
    assert text.returncode == 2 and "Invalid value for '--error'" in text.stderr and "Traceback" not in text.stderr
    examples = abp("errors", str(job), "--examples", "50", cwd=workdir)
    assert examples.returncode == 1 and "--examples must be between 0 and 20" in examples.stderr
    assert "Traceback" not in out_of_range.stderr + zero.stderr + both.stderr + examples.stderr
    with pytest.raises(AbpError, match="no job"):
        orch.error_summary("nope")
    assert orch.status(job).failed == 6  # nothing was half-retried

