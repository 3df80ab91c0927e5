"""`abp apply` on a real isolated `command` job (detached executor, concurrency 8): every unit edits
its own line of one shared file in its own worktree; applying them all in unit order takes every
other unit and reports each of the rest as conflicting with the unit before it (git refuses
adjacent edits), never half-applied; a re-run changes nothing; the user's checkout is never touched."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agentic_batch.service import Orchestrator
from agentic_batch.spec import JobSpec
from tests.fixtures.git_repos import init_repo, shared_lines
from tests.fixtures.git_repos import sh as git
from tests.fixtures.abp import abp, wait_status

LINES = 12
EDITOR = """
import pathlib, sys
n = int(sys.argv[1])
path = pathlib.Path("shared.txt")
lines = path.read_text().splitlines()
lines[n] = f"edited by {n}"
path.write_text("\\n".join(lines) + "\\n")
"""


def test_apply_every_unit_of_a_shared_file_job(orch: Orchestrator, workdir: Path) -> None:
    repo = init_repo(workdir / "repo", {"shared.txt": shared_lines(LINES)})
    (workdir / "editor.py").write_text(EDITOR)
    items = workdir / "items.jsonl"
    items.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(LINES)))
    spec = JobSpec(name="shared", source={"kind": "jsonl", "path": str(items), "key": "n"}, worker="command",
                   worker_options={"command": f"{sys.executable} {workdir / 'editor.py'} {{{{ n }}}}"},
                   isolate="worktree", concurrency=8)
    job = orch.create(spec, cwd=repo).job_id
    orch.start(job, skip_test=True)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120).status == "COMPLETED"
    head = git(repo, "rev-parse", "HEAD")

    result = json.loads(abp("apply", str(job), "--json").stdout)
    # unit number u edits line u-1: units 1, 3, 5... apply; each even unit edits the line next to the unit before it
    assert result["applied"] == list(range(1, LINES + 1, 2))
    assert [(c["number"], c["files"], c["with_units"]) for c in result["conflicts"]] == [
        (u, ["shared.txt"], [u - 1]) for u in range(2, LINES + 1, 2)]  # (u + 1 is applied after it)
    applied = git(repo, "show", f"abp/{job}/applied:shared.txt").splitlines()
    assert applied == [f"edited by {i}" if i % 2 == 0 else f"line {i}" for i in range(LINES)]
    assert len(result["commits"]) == LINES // 2
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""

    again = abp("apply", str(job))
    assert again.returncode == 0 and "applied 0 unit(s)" in again.stdout
    assert "already applied: 1, 3, 5, 7, 9, 11" in again.stdout
    assert git(repo, "rev-list", "--count", f"{head}..abp/{job}/applied") == str(LINES // 2)
