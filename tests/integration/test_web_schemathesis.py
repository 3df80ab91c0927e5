"""schemathesis against a real `abp serve` app: every answer is one `/openapi.json` documents.

schemathesis reads `/openapi.json` and sends requests made from it: valid ones, boundary values
(integers of 2^63, odd unicode in ids, empty and malformed bodies) and random ones, with the
dashboard's CSRF header so writes get past the cross-site guard. It checks every answer: no 5xx, no
status code the operation does not document, a body that matches the documented response schema
(the service's read models) and the documented content type. Any failure fails the test with
schemathesis's own report (each failure has a `curl` line that reproduces it).

Runs when schemathesis is installed (the `dev` extra has it) or named by ABP_SCHEMATHESIS (an
executable, e.g. one in a separate virtualenv); skipped otherwise. Bounded: a few dozen examples per
operation; bench/schemathesis_run.sh is the long run (hundreds per operation, every check).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.abp import wait_status
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)

EXAMPLES = int(os.environ.get("ABP_SCHEMATHESIS_EXAMPLES", "8"))
#: What every answer must satisfy. (Not `positive_data_acceptance`: a schema-valid job spec can still
#: name a file that does not exist or a template field the items lack, which is a 422 by design.)
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"


def schemathesis_command() -> list[str] | None:
    named = os.environ.get("ABP_SCHEMATHESIS")
    if named:
        return [named]
    if importlib.util.find_spec("schemathesis") is not None:
        entry = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
        return [sys.executable, "-c", entry]
    found = shutil.which("schemathesis")
    return [found] if found else None


def config_with_real_ids(jobs: list[str], units: list[str]) -> str:
    """A schemathesis config that often puts a real job / unit in `{job}` and `{unit}`: a random
    string is almost always a 404, which never reaches the code behind the lookup."""
    quoted = ", ".join(f'"{j}"' for j in jobs), ", ".join(f'"{u}"' for u in units)
    return (f"[dictionaries.jobs]\nvalues = [{quoted[0]}]\n\n[dictionaries.units]\nvalues = [{quoted[1]}]\n\n"
            '[parameters]\n"path.job" = { dictionary = "jobs", probability = 0.8 }\n'
            '"path.unit" = { dictionary = "units", probability = 0.8 }\n')


@pytest.mark.slow
def test_every_generated_request_gets_a_documented_answer(web: Web, tmp_path: Path) -> None:  # noqa: F811
    command = schemathesis_command()
    if command is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]', or set ABP_SCHEMATHESIS)")
    done = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", name="done"), status=201)["job_id"]
    web.ok("POST", f"/api/jobs/{done}/start", {"skip_test": True})
    wait_status(web.orch, done, {"COMPLETED", "FAILED"})
    web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", name="waiting"), status=201)
    csrf = web.app.state.sessions.anonymous_csrf
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_with_real_ids(jobs=[str(done), "done", "last"], units=["1", "2", "3"]))
    result = subprocess.run(
        [*command, "--config-file", str(config), "run", f"{web.url}/openapi.json", "--checks", CHECKS,
         "--header", f"X-ABP-CSRF: {csrf}", "--max-examples", str(EXAMPLES), "--seed", "1",
         "--phases", "coverage,fuzzing", "--continue-on-failure",
         "--exclude-path-regex", "/stream$",  # endless by design (SSE): tested in test_web_live
         "--request-timeout", "60", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
