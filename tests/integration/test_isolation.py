"""`--isolate worktree` with real git, real detached executors and real agent processes: every
unit's attempt in its own worktree of the base, its diff as the result, verify feeding the retry,
kill -9 then resume leaving nothing behind, and bad input refused in one line."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.spec import JobSpec
from agentic_batch.store import UnitRecord
from tests.fixtures.git_repos import init_repo, shared_lines
from tests.fixtures.git_repos import sh as git
from tests.fixtures.abp import abp, processes_with, wait_status, wait_until

LINES = 16
#: An agent that edits line N of shared.txt in its cwd, read-modify-write with a pause in between:
#: in one shared checkout, concurrent units lose each other's edits.
EDITOR = """
import pathlib, sys, time
n, pause = int(sys.argv[1]), float(sys.argv[2])
path = pathlib.Path("shared.txt")
lines = path.read_text().splitlines()
path.write_text("partial edit\\n")  # what a killed agent leaves behind
time.sleep(pause)
lines[n] = f"edited by {n}"
path.write_text("\\n".join(lines) + "\\n")
print(f"unit {n} done")
"""


@pytest.fixture
def repo(workdir: Path) -> Path:
    """A repository (the job's working directory) with shared.txt; the items and the editor live outside."""
    root = init_repo(workdir / "repo", {"shared.txt": shared_lines(LINES)})
    (workdir / "editor.py").write_text(EDITOR)
    (workdir / "items.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(LINES)))
    return root


def editor_job(orch: Any, workdir: Path, repo: Path, *, pause: float = 0.3, marker: str = "", n: int = LINES,
               **kw: Any) -> int:
    items = workdir / "items.jsonl"
    items.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(n)))
    command = f"{sys.executable} {workdir / 'editor.py'} {{{{ n }}}} {pause} {marker}".strip()
    spec = JobSpec(name="iso", source={"kind": "jsonl", "path": str(items), "key": "n"}, worker="command",
                   worker_options={"command": command}, **kw)
    return orch.create(spec, cwd=repo).job_id


def units(orch: Any, job_id: int) -> list[UnitRecord]:
    return list(orch.store.units.iter_units(job_id))


def added_lines(patch: str | None) -> list[str]:
    return [line[1:] for line in (patch or "").splitlines() if line.startswith("+") and not line.startswith("+++")]


def test_concurrent_units_editing_one_file_each_diff_holds_only_its_own_edit(orch: Any, workdir: Path,
                                                                            repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    job = editor_job(orch, workdir, repo, isolate="worktree", concurrency=8)
    assert orch.job(job).base_commit == base and orch.job(job).repo == str(repo.resolve())
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED" and final.completed == LINES
    for unit in units(orch, job):
        n = unit.payload["n"]
        assert added_lines(unit.patch) == [f"edited by {n}"], unit.patch
        assert unit.changes is not None
        assert (unit.changes["files"], unit.changes["added"], unit.changes["deleted"]) == (1, 1, 1)
        branch = unit.changes["branch"]
        assert branch == f"abp/{job}/{unit.number}-{n}"
        assert git(repo, "rev-list", "--count", f"{base}..{branch}") == "1"
        assert git(repo, "show", f"{branch}:shared.txt").splitlines()[n] == f"edited by {n}"
    # the user's checkout never saw an edit, and every worktree is gone (the branches stay)
    assert (repo / "shared.txt").read_text() == "".join(f"line {i}\n" for i in range(LINES))
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert len(git(repo, "branch", "--list", f"abp/{job}/*").splitlines()) == LINES
    # the executor made its 8 worktrees before claiming, and nothing of them (nor an unused shared
    # workspace directory) is left in the job's directory
    job_dir = Path(os.environ["ABP_HOME"]) / "jobs" / str(job)
    assert any("checked out 8 worktree(s) of the base" in line.message for line in orch.logs(job))
    assert not (job_dir / "workspace").exists()
    # git forgot them before the job ended; their files go right after it
    wait_until(lambda: not list((job_dir / "worktrees").iterdir()), timeout=60, what="the worktrees' files deleted")
    wait_until(lambda: any(line.message.startswith("removed 8 idle worktree(s) in") for line in orch.logs(job)),
               what="the removal logged")


def test_without_isolation_the_same_job_loses_edits(orch: Any, workdir: Path, repo: Path) -> None:
    job = editor_job(orch, workdir, repo, concurrency=8)
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    # in one shared checkout, units read each other's half-written file (some fail on it) and
    # overwrite each other's edits: the file ends up without most of them
    edited = [line for line in (repo / "shared.txt").read_text().splitlines() if line.startswith("edited by")]
    assert len(edited) < LINES
    assert all(u.patch is None and u.changes is None for u in units(orch, job))


def test_verify_fails_the_first_attempt_and_feeds_its_output_to_the_second(orch: Any, workdir: Path,
                                                                          repo: Path) -> None:
    check = workdir / "check.py"
    check.write_text("import os, sys\nprint('checking', sys.argv[1])\nprint('FAIL: line looks wrong on attempt',"
                     " os.environ['ABP_ATTEMPT'])\nsys.exit(1 if os.environ['ABP_ATTEMPT'] == '1' else 0)\n")
    items = workdir / "items.jsonl"
    items.write_text(json.dumps({"n": 3}) + "\n")
    spec = JobSpec(name="verify", source={"kind": "jsonl", "path": str(items), "key": "n"}, worker="command",
                   prompt="edit line {{ n }}",
                   worker_options={"command": f"{sys.executable} {workdir / 'editor.py'} {{{{ n }}}} 0 "
                                              "{{ prompt }}"},
                   isolate="worktree", verify=f"{sys.executable} {check} {{{{ n }}}}")
    job = orch.create(spec, cwd=repo).job_id
    orch.start(job, skip_test=True)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60).status == "COMPLETED"
    [unit] = units(orch, job)
    assert unit.attempt == 2
    assert unit.prompt is not None and unit.prompt.startswith("edit line 3")
    assert "verification command failed" in unit.prompt and "FAIL: line looks wrong on attempt 1" in unit.prompt
    assert unit.verify_output == "checking 3\nFAIL: line looks wrong on attempt 2"
    assert added_lines(unit.patch) == ["edited by 3"]
    branch = unit.changes["branch"] if unit.changes else ""
    assert git(repo, "rev-list", "--count", f"main..{branch}") == "1"
    detail = orch.unit(job, 1)
    kinds = [e.kind for e in detail.events]
    assert "verify_result" in kinds and "changes" in kinds


def test_require_changes_fails_a_unit_that_changed_nothing(orch: Any, workdir: Path, repo: Path) -> None:
    items = workdir / "items.jsonl"
    items.write_text(json.dumps({"n": 1}) + "\n")
    spec = JobSpec(name="nothing", source={"kind": "jsonl", "path": str(items), "key": "n"}, worker="command",
                   worker_options={"command": "true"}, isolate="worktree", require_changes=True, max_retries=0)
    job = orch.create(spec, cwd=repo).job_id
    orch.start(job, skip_test=True)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60).status == "FAILED"
    [unit] = units(orch, job)
    assert unit.error == "the agent changed no file (--require-changes)"
    assert unit.changes is not None and unit.changes["files"] == 0 and unit.changes["commit"] is None


def test_kill_9_mid_unit_then_resume_leaves_no_stray_worktree_and_one_commit_per_branch(
        orch: Any, workdir: Path, repo: Path) -> None:
    marker = f"abp-iso-kill9-{uuid.uuid4().hex[:8]}"
    job = editor_job(orch, workdir, repo, pause=2.0, marker=marker, n=6, isolate="worktree", concurrency=3)
    orch.start(job, skip_test=True)
    pid = wait_until(lambda: orch.status(job).executor.pid if orch.status(job).executor.state == "running" else None,
                     what="a running executor")
    wait_until(lambda: len(processes_with(marker)) >= 3, timeout=60, what="three units in flight")
    worktrees = Path(os.environ["ABP_HOME"]) / "jobs" / str(job) / "worktrees"

    def half_edited() -> list[Path]:
        found = [wt for owner in worktrees.iterdir() for wt in owner.iterdir()]
        return [wt for wt in found if (wt / "shared.txt").read_text() == "partial edit\n"]

    wait_until(lambda: len(half_edited()) >= 3, timeout=30, what="three half-edited worktrees")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes_with(marker), timeout=15, what="the dead executor's agents gone")

    orch.resume(job)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=120)
    assert final.status == "COMPLETED" and final.completed == 6
    # no stray worktree, no owner directory (the run's own are deleted just after the job ends)
    wait_until(lambda: not worktrees.exists() or not list(worktrees.iterdir()), timeout=60, what="no worktree left")
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert any("removed 3 worktree(s) of executors that are gone" in line.message for line in orch.logs(job))
    rerun = [u for u in units(orch, job) if u.attempt == 2]
    assert rerun  # the units in flight ran again, from the base
    for unit in units(orch, job):
        assert unit.changes is not None
        assert git(repo, "rev-list", "--count", f"main..{unit.changes['branch']}") == "1"
        assert added_lines(unit.patch) == [f"edited by {unit.payload['n']}"] and "partial" not in (unit.patch or "")


def test_bad_input_is_one_line_and_creates_nothing(workdir: Path, repo: Path) -> None:
    plain = workdir / "plain"
    plain.mkdir()
    base = ["create", "--name", "bad", "--jsonl", str(workdir / "items.jsonl"), "--key", "n", "--command", "true"]
    cases = [
        (plain, [*base, "--isolate", "worktree"], "is not in a git repository; --isolate worktree needs one"),
        (repo, [*base, "--isolate", "worktree", "--base", "no-such-branch"],
         "--base: 'no-such-branch' is not a commit"),
        (repo, [*base, "--isolate", "worktree", "--verify", "pytest {{ missing_field }}"],
         "--verify uses 'missing_field' but the item has no field 'missing_field'"),
        (repo, [*base, "--verify", "true"], "--verify need(s) --isolate worktree"),
    ]
    for cwd, args, words in cases:
        result = abp(*args, cwd=cwd)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr
    assert abp("list", "--json", cwd=repo).stdout.strip() in ("[]", '{"jobs": []}') or '"id"' not in abp(
        "list", "--json", cwd=repo).stdout
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_uncommitted_changes_are_a_warning_and_not_part_of_the_base(workdir: Path, repo: Path) -> None:
    (repo / "shared.txt").write_text("uncommitted\n")
    result = abp("create", "--name", "warn", "--jsonl", str(workdir / "items.jsonl"), "--key", "n", "--command",
                 "true", "--isolate", "worktree", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "uncommitted changes that are not part of the base" in result.stderr and "shared.txt" in result.stderr


APPEND = """
import pathlib, sys
target = pathlib.Path(sys.argv[1])
target.write_text(target.read_text() + "# edited\\n")
pathlib.Path("ran-here.txt").write_text(target.name + "\\n")  # in the command's cwd
"""

PY_FUNC = """
import pathlib

def edit(payload, ctx):
    target = pathlib.Path(payload["path"])
    assert str(target).startswith(str(ctx.workdir)), (target, ctx.workdir)
    target.write_text(target.read_text() + "# edited by python\\n")
    return str(ctx.workspace)
"""


def files_repo(repo: Path) -> None:
    (repo / "src").mkdir()
    (repo / "tools").mkdir()
    for name in ("a.py", "b.py"):
        (repo / "src" / name).write_text(f"{name[0]} = 1\n")
    (repo / "tools" / ".keep").write_text("")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sources")


@pytest.mark.parametrize("kind", ["command", "python"])
def test_item_paths_cwd_and_workdir_are_the_worktrees_for_every_worker(orch: Any, workdir: Path, repo: Path,
                                                                       kind: str) -> None:
    files_repo(repo)
    if kind == "command":
        (workdir / "append.py").write_text(APPEND)
        # an absolute cwd option inside the repository runs in the same directory of the worktree
        options: dict[str, Any] = {"command": f"{sys.executable} {workdir / 'append.py'} {{{{ path }}}}",
                                   "cwd": str(repo / "tools")}
    else:
        (workdir / "pyfunc.py").write_text(PY_FUNC)
        options = {"function": f"{workdir / 'pyfunc.py'}:edit"}
    spec = JobSpec(name="paths", source={"kind": "files", "glob": "src/*.py", "root": str(repo)}, worker=kind,
                   worker_options=options, isolate="worktree")
    job = orch.create(spec, cwd=repo).job_id
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED", [u.error for u in units(orch, job)]
    home = Path(os.environ["ABP_HOME"])
    for unit in units(orch, job):
        assert unit.changes is not None
        changed = sorted(c["path"] for c in unit.changes["changes"])
        rel = unit.payload["relative_path"]
        if kind == "command":
            assert changed == [rel, "tools/ran-here.txt"]
        else:
            assert changed == [rel]
            assert unit.output is not None and unit.output.startswith(str(home / "jobs" / str(job) / "worktrees"))
    assert git(repo, "status", "--porcelain") == ""  # nothing touched the user's checkout


def test_an_api_model_tool_loop_writes_in_the_worktree(orch: Any, workdir: Path, repo: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from agentic_batch.testing.openai_server import Reply, Request, ScriptedOpenAIServer

    files_repo(repo)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")  # the detached executor inherits it

    def responder(request: Request) -> Reply:
        name = request.first_user_text.split("FILE=")[1].split()[0]
        if request.turn == 0:  # a path relative to the agent's cwd (the file's directory in the worktree)
            return Reply.tool_calls([("write_file", {"path": f"{name}.notes", "content": f"notes on {name}\n"})])
        return Reply.text("noted")

    with ScriptedOpenAIServer(responder) as server:
        spec = JobSpec(name="openai", source={"kind": "files", "glob": "src/*.py", "root": str(repo)},
                       prompt="Take notes. FILE={{ name }}", worker="openai",
                       worker_options={"model": "gpt-4o-mini", "base_url": server.url}, isolate="worktree")
        job = orch.create(spec, cwd=repo).job_id
        orch.start(job, skip_test=True)
        final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED", [u.error for u in units(orch, job)]
    for unit in units(orch, job):
        assert unit.changes is not None
        assert [c["path"] for c in unit.changes["changes"]] == [f"src/{unit.payload['name']}.notes"]
    assert not list((repo / "src").glob("*.notes")) and git(repo, "status", "--porcelain") == ""


def test_the_anthropic_tool_loop_edits_files_in_the_worktree(orch: Any, workdir: Path, repo: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The `anthropic` worker (the real SDK against the scripted Messages API): the prompt's path is the
    worktree's copy, the agent reads and rewrites it, adds a file, and cannot write into the user's
    checkout (outside its allowed directory); the diff holds exactly its two files."""
    from agentic_batch.testing.anthropic_server import MessagesRequest, Reply, ScriptedAnthropicServer

    files_repo(repo)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    prompts: list[str] = []

    def responder(request: MessagesRequest) -> Reply:
        path = request.first_user_text.split("FILE=")[1].split()[0]
        name = Path(path).name
        if request.turn == 0:
            prompts.append(path)
            return Reply.tool_use("read_file", {"path": path})
        if request.turn == 1:
            assert request.tool_results[0]["text"].strip().endswith("= 1")
            return Reply.tool_uses([("write_file", {"path": name, "content": f"{name[0]} = 2\n"}),
                                    ("write_file", {"path": f"{name}.notes", "content": "bumped\n"}),
                                    ("write_file", {"path": str(repo / "src" / "escape.txt"), "content": "x"})])
        assert [r["is_error"] for r in request.tool_results] == [False, False, True]
        return Reply.text("bumped")

    with ScriptedAnthropicServer(responder) as server:
        spec = JobSpec(name="anthropic", source={"kind": "files", "glob": "src/*.py", "root": str(repo)},
                       prompt="Bump the value. FILE={{ path }}", worker="anthropic",
                       worker_options={"model": "claude-sonnet-4-6", "base_url": server.url}, isolate="worktree")
        job = orch.create(spec, cwd=repo).job_id
        orch.start(job, skip_test=True)
        final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
    assert final.status == "COMPLETED", [u.error for u in units(orch, job)]
    worktrees = Path(os.environ["ABP_HOME"]) / "jobs" / str(job) / "worktrees"
    assert len(prompts) == 2 and all(Path(p).is_relative_to(worktrees) for p in prompts), prompts
    for unit in units(orch, job):
        rel = unit.payload["relative_path"]
        assert unit.changes is not None and unit.output == "bumped"
        assert sorted(c["path"] for c in unit.changes["changes"]) == [rel, f"{rel}.notes"]
        assert added_lines(unit.patch) == [f"{Path(rel).name[0]} = 2", "bumped"]
        assert git(repo, "show", f"{unit.changes['branch']}:{rel}") == f"{Path(rel).name[0]} = 2"
    assert git(repo, "status", "--porcelain", "--ignored") == "" and not (repo / "src" / "escape.txt").exists()
    assert git(repo, "worktree", "list").count("\n") == 0
