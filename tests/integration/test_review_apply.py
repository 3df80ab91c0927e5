"""Review, apply and clean an isolated job through the service, against a real repository and store
(the units' attempts made as the engine makes them: tests/fixtures/git_repos.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic_batch.errors import IllegalState, InvalidSpec, NotFound
from agentic_batch.service import Orchestrator
from agentic_batch.service.review import job_worktrees
from agentic_batch.spec import JobSpec
from agentic_batch.states import JobStatus, UnitStatus
from tests.fixtures.git_repos import edited_job, make_repo, run_units, sh


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture
def job_id(orch: Orchestrator, repo: Path) -> int:
    return edited_job(orch, repo)


def test_changes_list_and_a_units_diff(orch: Orchestrator, job_id: int, repo: Path) -> None:
    changes = orch.changes(job_id)
    assert changes.repo == str(repo) and changes.base_commit == sh(repo, "rev-parse", "HEAD")
    rows = {u.number: u for u in changes.units}
    assert [(n, r.files, r.added, r.deleted) for n, r in rows.items()] == [
        (1, 2, 2, 2), (2, 1, 1, 1), (3, 1, 1, 1), (4, 0, 0, 0), (5, 1, 1, 1)]
    assert rows[1].branch == f"abp/{job_id}/1-a.py" and rows[4].commit is None and rows[5].status == "FAILED"
    assert (changes.changed, changes.files, changes.added) == (4, 5, 5)
    diff = orch.diff(job_id, 1)
    assert [f.path for f in diff.changes] == ["a.py", "shared.txt"]
    assert "+a = 2" in diff.patch and "diff --git a/shared.txt b/shared.txt" in diff.patch
    assert orch.diff(job_id, "key:c.py").number == 3
    assert orch.diff(job_id, 4).patch == ""
    with pytest.raises(NotFound):
        orch.diff(job_id, 99)


def test_review_marks_hold_for_the_commit_they_were_given_to(orch: Orchestrator, job_id: int) -> None:
    marks = orch.review(job_id, "1,3", "accepted")
    assert marks.units == [1, 3]
    orch.review(job_id, [2], "rejected")
    assert {u.number: u.review for u in orch.changes(job_id).units} == {1: "accepted", 2: "rejected", 3: "accepted",
                                                                       4: None, 5: None}
    with pytest.raises(IllegalState, match="unit 4 of job .* has no changes to review"):
        orch.review(job_id, "4", "accepted")
    with pytest.raises(InvalidSpec, match="has no unit 9-10"):
        orch.review(job_id, "3,9-10", "accepted")
    with pytest.raises(InvalidSpec, match="not a list of unit numbers"):
        orch.review(job_id, "three", "accepted")
    orch.review(job_id, "3", None)
    assert orch.diff(job_id, 3).review is None
    # a unit that runs again has a new commit: its old mark no longer counts
    unit = orch.store.browse.unit_by_number(job_id, 1)
    assert unit is not None
    orch.store.units.set_units_status(job_id, [UnitStatus.COMPLETED], UnitStatus.PENDING, unit_ids=[unit.id],
                                      reset=True)
    run_units(orch, job_id, {1: {"a.py": "a = 'again'\n"}})
    assert orch.diff(job_id, 1).review is None


def test_apply_all_then_again_then_accepted(orch: Orchestrator, job_id: int, repo: Path) -> None:
    checkout = sh(repo, "rev-parse", "HEAD")
    result = orch.apply(job_id)
    assert result.branch == f"abp/{job_id}/applied" and result.created and not result.squash
    assert result.applied == [1, 3] and result.unchanged == [4] and result.unfinished == [5]
    assert [(c.number, c.files, c.with_units) for c in result.conflicts] == [(2, ["shared.txt"], [1])]
    assert result.not_selected == [] and len(result.commits) == 2
    assert sh(repo, "rev-parse", "HEAD") == checkout and sh(repo, "status", "--porcelain") == ""
    again = orch.apply(job_id)
    assert again.applied == [] and again.already_applied == [1, 3] and again.commits == []
    orch.review(job_id, "3", "accepted")
    sh(repo, "branch", "release")
    accepted = orch.apply(job_id, accepted=True, onto="release", squash=True)
    assert accepted.applied == [3] and accepted.not_selected == [1, 2, 4, 5] and len(accepted.commits) == 1
    assert sh(repo, "show", "release:c.py") == "c = 3"


def test_apply_bad_input_is_one_line_and_creates_nothing(orch: Orchestrator, job_id: int, repo: Path) -> None:
    refs = sh(repo, "for-each-ref")
    (repo / "a.py").write_text("a = 'mine'\n")
    with pytest.raises(InvalidSpec, match="checked out in .* with uncommitted changes"):
        orch.apply(job_id, onto="main")
    with pytest.raises(InvalidSpec, match="has no unit 42"):
        orch.apply(job_id, units="1,42")
    with pytest.raises(InvalidSpec, match="no branch 'nope'"):
        orch.apply(job_id, onto="nope")
    with pytest.raises(InvalidSpec, match="not both"):
        orch.apply(job_id, units="1", accepted=True)
    with pytest.raises(IllegalState, match="no accepted units"):
        orch.apply(job_id, accepted=True)
    assert sh(repo, "for-each-ref") == refs


def test_a_job_without_isolation_says_so(orch: Orchestrator, repo: Path) -> None:
    spec = JobSpec(name="inplace", source={"kind": "files", "root": str(repo), "glob": "*.py"}, worker="command",
                   worker_options={"command": "true"})
    plain = orch.create(spec, cwd=repo).job_id
    for call in (lambda: orch.changes(plain), lambda: orch.diff(plain, 1), lambda: orch.apply(plain),
                 lambda: orch.review(plain, "1", "accepted")):
        with pytest.raises(IllegalState, match="created without isolate worktree"):
            call()


def test_clean_removes_branches_worktrees_and_claude_dir_but_keeps_the_applied_branch(
        orch: Orchestrator, job_id: int, repo: Path) -> None:
    orch.apply(job_id, units="3")
    claude = orch.settings.job_dir(job_id) / "claude"
    claude.mkdir(parents=True)
    (claude / "projects").mkdir()
    kept_wt = job_worktrees(orch.settings, orch.job(job_id))
    unit = kept_wt.open("kept", 9, "left over")  # a kept worktree
    orch.store.jobs.update_job(job_id, status=JobStatus.RUNNING.value)
    with pytest.raises(IllegalState, match="cannot clean job .*: it is RUNNING"):
        orch.clean(job_id)
    orch.store.jobs.update_job(job_id, status=JobStatus.COMPLETED.value)
    result = orch.clean(job_id)
    assert result.branches_removed == 6 and result.worktrees_removed and result.claude_dir_removed  # 5 units + 9
    assert result.kept == [f"abp/{job_id}/applied"]
    assert sh(repo, "branch", "--list", f"abp/{job_id}/*").split() == [f"abp/{job_id}/applied"]
    assert not unit.path.exists() and not claude.exists() and sh(repo, "worktree", "list").count("\n") == 0
    # the diff is still in the store; applying what is already applied still works
    assert "+c = 3" in orch.diff(job_id, 3).patch
    assert orch.apply(job_id, units="3").already_applied == [3]
