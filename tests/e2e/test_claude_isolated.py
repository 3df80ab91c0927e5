"""The real Claude Code CLI (bundled in claude-agent-sdk, against the scripted model server) working
in isolated worktrees: its Write tool edits the worktree's copy, the diff is the unit's result, and a
verifier that refuses the first attempt feeds its output into the second attempt's prompt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentic_batch.spec import JobSpec
from agentic_batch.testing.anthropic_replies import Reply
from agentic_batch.testing.anthropic_scripts import MessagesRequest
from tests.fixtures.abp import wait_status
from tests.fixtures.claude_env import needs_claude_cli, offline_claude  # noqa: F401  (fixture)

pytestmark = needs_claude_cli

FILE = re.compile(r"FILE=(\S+)")
CHECK = """
import pathlib, sys
text = pathlib.Path(sys.argv[1] + ".summary").read_text()
print("summary says:", text.strip())
sys.exit(0 if text.startswith("good") else 1)
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_claude_edits_in_worktrees_and_verify_feedback_reaches_the_retry(orch: Any, workdir: Path,
                                                                         offline_claude) -> None:  # noqa: F811
    repo = workdir / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(2):
        (repo / f"doc{i}.md").write_text(f"# Document {i}\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base")
    (workdir / "check.py").write_text(CHECK)
    paths: list[str] = []

    def respond(req: MessagesRequest) -> Reply:
        path = (FILE.search(req.first_user_text) or [None, "unknown"])[1]
        if req.turn == 0:
            paths.append(path)
            retry = "verification command failed" in req.first_user_text
            assert not retry or "summary says: bad" in req.first_user_text
            content = "good summary\n" if retry else "bad summary\n"
            return Reply.tool_use("Write", {"file_path": f"{path}.summary", "content": content}, usage=(100, 10))
        return Reply.text("done", usage=(120, 5))

    offline_claude(respond)
    spec = JobSpec(name="claude-iso", source={"kind": "files", "glob": "*.md", "root": str(repo)},
                   prompt="Summarise the file. FILE={{ path }}", worker="claude",
                   worker_options={"model": "claude-sonnet-4-5", "max_turns": 4}, concurrency=2,
                   isolate="worktree", verify=f"{sys.executable} {workdir / 'check.py'} {{{{ relative_path }}}}")
    job = orch.create(spec, cwd=repo).job_id
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=180)
    assert final.status == "COMPLETED"
    assert len(paths) == 4 and all("/worktrees/" in p and not p.startswith(str(repo)) for p in paths), paths
    for unit in orch.store.units.iter_units(job):
        assert unit.attempt == 2 and unit.changes is not None
        name = Path(unit.payload["relative_path"]).name
        assert [c["path"] for c in unit.changes["changes"]] == [f"{name}.summary"]
        assert "+good summary" in (unit.patch or "") and "bad summary" not in (unit.patch or "")
        assert unit.verify_output == "summary says: good summary"
        assert unit.prompt is not None and "summary says: bad summary" in unit.prompt  # the retry's prompt
        assert git(repo, "rev-list", "--count", f"main..{unit.changes['branch']}") == "1"
    assert not list(repo.glob("*.summary")) and git(repo, "status", "--porcelain") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
