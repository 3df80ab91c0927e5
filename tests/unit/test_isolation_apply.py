"""agentic_batch.isolation.apply against real git: units made by real worktree attempts, applied onto a
new or an existing branch, per unit or squashed, conflicts skipped whole and explained, re-runs
idempotent, and the user's checkout never touched (unless it is the target, and then only clean)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.isolation import JobWorktrees, resolve_base
from tests.fixtures.git_repos import init_repo, sh, shared_lines
from agentic_batch.isolation.apply import TRAILER, ApplyOutcome, UnitCommit, applied_branch, apply_units

JOB = 7


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {**{f"{name}.py": f"{name} = 1\n" for name in "abcd"},
                                         "shared.txt": shared_lines(30)})


class Job:
    """A job's units, each made by a real attempt in its own worktree of the base."""

    def __init__(self, repo: Path, tmp_path: Path) -> None:
        base = resolve_base(repo)
        self.repo, self.base, self.lock_dir = repo, base.commit, tmp_path / "home" / "locks"
        self.worktrees = JobWorktrees(repo=repo, base=base.commit, job_id=JOB, job_dir=tmp_path / "home" / "jobs" / "7",
                                      lock_dir=self.lock_dir)
        self.units: dict[int, UnitCommit] = {}

    def unit(self, number: int, edits: dict[str, str]) -> UnitCommit:
        wt = self.worktrees.open("exec-1", number, f"key {number}")
        for path, text in edits.items():
            (wt.path / path).write_text(text)
        changes = self.worktrees.capture(wt, f"unit {number}")
        self.worktrees.close(wt)
        assert changes.commit is not None
        self.units[number] = UnitCommit(number=number, key=f"key {number}", commit=changes.commit)
        return self.units[number]

    def apply(self, numbers: list[int] | None = None, onto: str | None = None, squash: bool = False) -> ApplyOutcome:
        chosen = [self.units[n] for n in (numbers or sorted(self.units))]
        return apply_units(repo=self.repo, base=self.base, job_id=JOB, units=chosen, lock_dir=self.lock_dir,
                           onto=onto, squash=squash)

    def show(self, ref: str, path: str) -> str:
        return sh(self.repo, "show", f"{ref}:{path}")


def shared_with(line: int, text: str) -> str:
    lines = [f"line {i}" for i in range(30)]
    lines[line] = text
    return "\n".join(lines) + "\n"


@pytest.fixture
def job(repo: Path, tmp_path: Path) -> Job:
    j = Job(repo, tmp_path)
    j.unit(1, {"a.py": "a = 2\n"})
    j.unit(2, {"shared.txt": shared_with(3, "edited by 2")})
    j.unit(3, {"shared.txt": shared_with(3, "edited by 3")})   # the same line as unit 2: a conflict
    j.unit(4, {"shared.txt": shared_with(20, "edited by 4"), "b.py": "b = 4\n"})  # another hunk: merges
    return j


def test_units_apply_onto_a_new_branch_one_commit_each_and_a_conflict_is_skipped_whole(job: Job, repo: Path) -> None:
    head, status = sh(repo, "rev-parse", "HEAD"), sh(repo, "status", "--porcelain")
    outcome = job.apply()
    branch = applied_branch(JOB)
    assert outcome.branch == branch and outcome.created
    assert outcome.applied == [1, 2, 4] and outcome.already_applied == []
    assert [(c.number, c.files, c.with_units, c.with_target) for c in outcome.conflicts] == [
        (3, ["shared.txt"], [2], False)]
    assert sh(repo, "rev-parse", branch) == outcome.head == outcome.commits[-1]
    assert sh(repo, "rev-list", "--reverse", f"{job.base}..{branch}").split() == outcome.commits
    assert len(outcome.commits) == 3
    shared = job.show(branch, "shared.txt")
    assert "edited by 2" in shared and "edited by 4" in shared and "edited by 3" not in shared
    assert job.show(branch, "a.py") == "a = 2" and job.show(branch, "b.py") == "b = 4"
    assert sh(repo, "log", "-1", "--format=%s", outcome.commits[0]) == "abp job 7, unit 1: key 1"
    trailers = sh(repo, "log", "-1", f"--format=%(trailers:key={TRAILER},valueonly)", outcome.commits[2])
    assert trailers == f"7/4 {job.units[4].commit}"
    # the user's checkout: same HEAD, same files, nothing staged
    assert sh(repo, "rev-parse", "HEAD") == head and sh(repo, "status", "--porcelain") == status
    assert (repo / "a.py").read_text() == "a = 1\n" and sh(repo, "branch", "--show-current") == "main"


def test_a_rerun_skips_what_is_applied_and_makes_nothing_new(job: Job, repo: Path) -> None:
    first = job.apply()
    again = job.apply()
    assert again.applied == [] and again.already_applied == [1, 2, 4] and again.commits == []
    assert [c.number for c in again.conflicts] == [3] and not again.created
    assert sh(repo, "rev-parse", applied_branch(JOB)) == first.head
    job.unit(5, {"c.py": "c = 5\n"})  # a unit finished later is applied on top
    later = job.apply()
    assert later.applied == [5] and later.already_applied == [1, 2, 4]
    assert sh(repo, "rev-parse", f"{later.head}~1") == first.head


def test_selected_units_only_and_the_rest_later(job: Job, repo: Path) -> None:
    some = job.apply([4, 1])
    assert some.applied == [1, 4] and some.conflicts == []
    assert "edited by 2" not in job.show(applied_branch(JOB), "shared.txt")
    rest = job.apply([2, 3])
    assert rest.applied == [2] and [(c.number, c.with_units) for c in rest.conflicts] == [(3, [2])]


def test_squash_makes_one_commit_naming_every_unit(job: Job, repo: Path) -> None:
    outcome = job.apply(squash=True)
    assert outcome.applied == [1, 2, 4] and len(outcome.commits) == 1
    commit = outcome.commits[0]
    assert sh(repo, "rev-parse", f"{commit}^") == job.base
    assert sh(repo, "log", "-1", "--format=%s", commit) == "abp job 7: 3 unit(s) applied"
    trailers = sh(repo, "log", "-1", f"--format=%(trailers:key={TRAILER},valueonly)", commit).splitlines()
    assert trailers == [f"7/{n} {job.units[n].commit}" for n in (1, 2, 4)]
    assert sh(repo, "diff", "--name-only", job.base, commit).split() == ["a.py", "b.py", "shared.txt"]
    again = job.apply(squash=True)
    assert again.commits == [] and again.already_applied == [1, 2, 4]


def test_onto_an_existing_branch_not_checked_out(job: Job, repo: Path) -> None:
    sh(repo, "branch", "release")
    sh(repo, "switch", "-q", "-c", "work")  # the user works elsewhere
    outcome = job.apply([1, 4], onto="release")
    assert outcome.branch == "release" and not outcome.created and outcome.worktree is None
    assert job.show("release", "a.py") == "a = 2"
    assert sh(repo, "branch", "--list", applied_branch(JOB)) == ""  # no default branch made
    assert sh(repo, "branch", "--show-current") == "work" and (repo / "a.py").read_text() == "a = 1\n"


def test_onto_the_checked_out_branch_fast_forwards_the_clean_checkout(job: Job, repo: Path) -> None:
    (repo / "notes.txt").write_text("untracked, left alone\n")
    outcome = job.apply([1], onto="main")
    assert outcome.worktree == repo and outcome.applied == [1]
    assert (repo / "a.py").read_text() == "a = 2\n" and sh(repo, "status", "--porcelain") == "?? notes.txt"
    assert sh(repo, "rev-parse", "HEAD") == outcome.head


def test_onto_a_dirty_checkout_is_refused_and_nothing_is_made(job: Job, repo: Path) -> None:
    (repo / "d.py").write_text("d = 'mine'\n")
    before = sh(repo, "for-each-ref")
    with pytest.raises(InvalidSpec, match="checked out in .* with uncommitted changes") as exc:
        job.apply(onto="main")
    assert "\n" not in exc.value.one_line() and exc.value.message.startswith("onto: branch 'main'")
    assert sh(repo, "for-each-ref") == before and (repo / "d.py").read_text() == "d = 'mine'\n"


def test_onto_a_missing_or_malformed_branch_is_refused(job: Job, repo: Path) -> None:
    before = sh(repo, "for-each-ref")
    with pytest.raises(InvalidSpec, match="no branch 'nope'"):
        job.apply(onto="nope")
    for bad in ("-x", "a..b", "with space"):
        with pytest.raises(InvalidSpec, match="is not a branch name"):
            job.apply(onto=bad)
    assert sh(repo, "for-each-ref") == before


def test_a_target_that_does_not_contain_the_base_gets_only_the_units_changes(job: Job, repo: Path) -> None:
    """Cherry-pick semantics: the merge base is the unit's base, so the base's own history (here a
    commit the target lacks) is not dragged in."""
    sh(repo, "switch", "-q", "--orphan", "other")
    for name in ("a", "b", "c"):
        (repo / f"{name}.py").write_text(f"{name} = 1\n")
    (repo / "own.txt").write_text("the other line of history\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "unrelated root")
    sh(repo, "switch", "-q", "main")
    outcome = job.apply([1, 4], onto="other")
    assert outcome.applied == [1] and [(c.number, c.files, c.with_target) for c in outcome.conflicts] == [
        (4, ["shared.txt"], True)]  # the target has no shared.txt: unit 4's edit of it cannot apply
    assert job.show("other", "a.py") == "a = 2" and job.show("other", "own.txt") == "the other line of history"
    assert "shared.txt" not in sh(repo, "ls-tree", "--name-only", "other")
    assert sh(repo, "rev-parse", f"{outcome.head}^") == sh(repo, "rev-parse", "other~1")


def test_changes_already_on_the_target_count_as_applied(job: Job, repo: Path) -> None:
    sh(repo, "merge", "-q", "--no-edit", "--no-ff", job.units[1].commit)  # merged by hand
    outcome = job.apply([1, 2], onto="main")
    assert outcome.already_applied == [1] and outcome.applied == [2]
