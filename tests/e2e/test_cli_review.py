"""`abp diff|review|apply|clean` as a user runs them (real subprocesses, a real repository): the
changes table, a unit's patch (raw when piped, escaped and coloured on a terminal), marks, the
apply summary, and bad input as one line that creates nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp
from tests.fixtures.git_repos import edited_job, make_repo, run_units, sh

TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture
def job(orch: Orchestrator, repo: Path) -> str:
    return str(edited_job(orch, repo))


def test_diff_table_and_patch_piped_applies_with_git(job: str, repo: Path, tmp_path: Path) -> None:
    table = abp("diff", job)
    assert table.returncode == 0, table.stderr
    assert "4 unit(s) changed 5 file(s)" in table.stdout and "a.py" in table.stdout and "FAILED" in table.stdout
    patch = abp("diff", job, "1")
    assert patch.returncode == 0 and patch.stdout.startswith("diff --git a/a.py b/a.py")
    assert "\x1b[" not in patch.stdout  # piped: the patch as stored, no colour
    check = tmp_path / "check"
    sh(repo, "worktree", "add", "-q", "--detach", str(check), "HEAD")
    subprocess.run(["git", "-C", str(check), "apply", "--index"], input=patch.stdout, text=True, check=True)
    assert (check / "a.py").read_text() == "a = 2\n"
    stat = abp("diff", job, "1", "--stat")
    assert "a.py" in stat.stdout and "+1 -1" in stat.stdout and "@@" not in stat.stdout
    as_json = json.loads(abp("diff", job, "3", "--json").stdout)
    assert as_json["number"] == 3 and as_json["changes"][0]["path"] == "c.py" and "+c = 3" in as_json["patch"]


def test_diff_on_a_terminal_is_coloured_and_escapes_what_the_agent_wrote(orch: Orchestrator, repo: Path) -> None:
    from tests.fixtures.git_repos import isolated_job

    job_id = isolated_job(orch, repo)
    run_units(orch, job_id, {1: {"a.py": "a = '\x1b[2J\x1b]0;pwned\x07'\n"}})
    shown = abp("diff", str(job_id), "1", env=TERMINAL)
    assert shown.returncode == 0, shown.stderr
    assert "\\x1b[2J" in shown.stdout and "\x1b[2J" not in shown.stdout and "\x07" not in shown.stdout
    assert "\x1b[1mdiff --git a/a.py b/a.py\x1b[0m" in shown.stdout  # file headers bold
    assert "\x1b[31m-a = 1\x1b[0m" in shown.stdout and "\x1b[32m+a = '\\x1b[2J" in shown.stdout  # -red, +green


def test_review_then_apply_accepted_and_the_summary(job: str, repo: Path) -> None:
    marked = abp("review", job, "1,3", "--accept")
    assert marked.returncode == 0 and "unit(s) 1, 3 marked accepted" in marked.stdout
    table = abp("diff", job)
    assert table.stdout.count("accepted") == 2
    applied = abp("apply", job)
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert lines[0].startswith(f"applied 2 unit(s) onto abp/{job}/applied (new branch from the base): 1, 3")
    assert "skipped, conflict: unit 2 (shared.txt) with unit 1" in applied.stdout
    assert "unchanged: 4" in applied.stdout and "unfinished (not completed): 5" in applied.stdout
    again = abp("apply", job, "--accepted", "--squash")
    assert again.returncode == 0 and "applied 0 unit(s)" in again.stdout and "already applied: 1, 3" in again.stdout
    assert "not selected: 2, 4-5" in again.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--onto", "nope"], "error: --onto: no branch 'nope'"),
    (["--units", "2,40-41"], "error: --units: job {job} has no unit 40-41"),
    (["--units", "x"], "error: --units: 'x' is not a list of unit numbers"),
    (["--squash", "--commit-per-unit"], "error: give either --squash or --commit-per-unit, not both"),
    (["--units", "1", "--accepted"], "error: give either --units or --accepted, not both"),
])
def test_apply_bad_input_is_one_line_and_creates_nothing(job: str, repo: Path, args: list[str], message: str) -> None:
    before = sh(repo, "for-each-ref")
    result = abp("apply", job, *args)
    assert result.returncode == 1 and result.stderr.strip().startswith(message.format(job=job)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sh(repo, "for-each-ref") == before


def test_apply_onto_a_dirty_checkout_and_a_job_without_isolation(job: str, repo: Path, orch: Orchestrator) -> None:
    (repo / "b.py").write_text("mine\n")
    dirty = abp("apply", job, "--onto", "main")
    assert dirty.returncode == 1 and "--onto: branch 'main' is checked out in" in dirty.stderr
    assert "with uncommitted changes" in dirty.stderr and len(dirty.stderr.strip().splitlines()) == 1
    from agentic_batch.spec import JobSpec

    plain = orch.create(JobSpec(name="plain", source={"kind": "files", "root": str(repo), "glob": "*.py"},
                                worker="command", worker_options={"command": "true"}), cwd=repo).job_id
    for command in (["diff", str(plain)], ["apply", str(plain)], ["review", str(plain), "1", "--accept"]):
        result = abp(*command)
        assert result.returncode == 1 and "created without --isolate worktree" in result.stderr, command


def test_clean(job: str, repo: Path) -> None:
    abp("apply", job, "--units", "3")
    result = abp("clean", job)
    assert result.returncode == 0 and "removed 5 branch(es)" in result.stdout, result.stderr
    assert f"kept abp/{job}/applied" in result.stderr
    assert sh(repo, "branch", "--list", f"abp/{job}/*").split() == [f"abp/{job}/applied"]
