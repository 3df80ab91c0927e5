"""agentic_batch.isolation against real git: base resolution, fresh worktrees per attempt, the
captured commit and patch, removal, pruning dead owners, and parallel attempts on one repository."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentic_batch.errors import InvalidSpec
from agentic_batch.isolation import JobWorktrees, branch_name, key_slug, resolve_base
from agentic_batch.isolation.worktree import parse_numstat


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "user.email", "t@example.com")
    sh(root, "config", "user.name", "t")
    (root / "src" / "a.py").write_text("a = 1\n")
    (root / "src" / "b.py").write_text("b = 1\n")
    (root / "shared.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    (root / "logo.bin").write_bytes(bytes(range(256)))
    (root / ".gitignore").write_text("*.log\n")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "base")
    return root.resolve()


def worktrees(repo: Path, tmp_path: Path, job_id: int = 7) -> JobWorktrees:
    base = resolve_base(repo)
    return JobWorktrees(repo=base.repo, base=base.commit, job_id=job_id, job_dir=tmp_path / "home" / "jobs" / "7",
                        lock_dir=tmp_path / "home" / "locks")


def test_base_is_head_of_the_repository_containing_a_path(repo: Path) -> None:
    base = resolve_base(repo / "src")
    assert base.repo == repo and base.commit == sh(repo, "rev-parse", "HEAD") and base.dirty == []
    assert base.warning() is None


def test_uncommitted_changes_are_named_in_a_warning(repo: Path) -> None:
    (repo / "src" / "a.py").write_text("a = 2\n")
    (repo / "new.txt").write_text("x")
    (repo / "debug.log").write_text("ignored")
    base = resolve_base(repo)
    assert sorted(base.dirty) == ["new.txt", "src/a.py"]
    warning = base.warning()
    assert warning is not None and "not part of the base" in warning and "src/a.py" in warning


def test_base_ref_outside_a_repository_and_unknown_ref_are_one_line_errors(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    with pytest.raises(InvalidSpec, match="is not in a git repository") as exc:
        resolve_base(outside)
    assert "\n" not in exc.value.one_line()
    with pytest.raises(InvalidSpec, match="'nope' is not a commit"):
        resolve_base(repo, "nope")
    with pytest.raises(InvalidSpec, match="not a commit"):
        resolve_base(repo, "--output=/tmp/x")
    sh(repo, "tag", "v1")
    assert resolve_base(repo, "v1").commit == sh(repo, "rev-parse", "HEAD")


def test_empty_repository_has_no_base(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    sh(empty, "init", "-q")
    with pytest.raises(InvalidSpec, match="no commit yet"):
        resolve_base(empty)


def test_branch_names_are_safe() -> None:
    assert branch_name(3, 12, "/home/u/repo/src/a b.py") == "abp/3/12-home-u-repo-src-a-b.py"
    assert key_slug("..//..") == "unit"
    assert key_slug("x.lock") == "x"
    assert len(key_slug("a" * 500)) == 40
    for key in ("a..b", "-x-", "héllo wörld", "~^:?*[\\", "foo.lock"):
        name = branch_name(1, 1, key)
        subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], check=True)


def test_attempt_commits_every_kind_of_change_and_removes_its_worktree(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)
    unit = jw.open("exec-1", 1, str(repo / "src" / "a.py"))
    assert unit.path.is_dir() and unit.path.is_relative_to(tmp_path / "home")
    assert jw.map_path(unit, repo / "src" / "a.py") == unit.path / "src" / "a.py"
    assert jw.map_path(unit, tmp_path / "elsewhere") is None
    (unit.path / "src" / "a.py").write_text("a = 2\n")            # modified
    (unit.path / "src" / "b.py").unlink()                         # deleted
    (unit.path / "shared.txt").rename(unit.path / "moved.txt")    # renamed
    (unit.path / "logo.bin").write_bytes(bytes(range(255, -1, -1)))  # binary
    (unit.path / "new.py").write_text("new = 1\n")                # new
    (unit.path / "run.log").write_text("ignored\n")               # .gitignore'd
    changes = jw.capture(unit, "abp job 7 unit 1")
    by_path = {f.path: f for f in changes.files}
    assert set(by_path) == {"src/a.py", "src/b.py", "moved.txt", "logo.bin", "new.py"}
    assert by_path["moved.txt"].old_path == "shared.txt"
    assert by_path["logo.bin"].added is None
    assert (by_path["src/a.py"].added, by_path["src/a.py"].deleted) == (1, 1)
    assert changes.stats()["files"] == 5 and "GIT binary patch" in changes.patch
    assert "run.log" not in changes.patch
    assert sh(repo, "rev-list", "--count", f"{jw.base}..{unit.branch}") == "1"
    assert sh(repo, "log", "-1", "--format=%an %s", unit.branch) == "agentic-batch abp job 7 unit 1"
    # the user's checkout is untouched
    assert (repo / "src" / "a.py").read_text() == "a = 1\n" and sh(repo, "status", "--porcelain") == ""
    jw.close(unit)
    assert unit.path.exists()  # idle, for the owner's next attempt
    assert jw.release_idle() == 1
    assert not unit.path.exists()
    assert str(unit.path) not in sh(repo, "worktree", "list")
    assert sh(repo, "rev-parse", unit.branch) == changes.commit  # the branch stays
    # the patch applies onto the base
    check = tmp_path / "check"
    sh(repo, "worktree", "add", "-q", "--detach", str(check), jw.base)
    subprocess.run(["git", "-C", str(check), "apply", "--index"], input=changes.patch, text=True, check=True)
    assert (check / "src" / "a.py").read_text() == "a = 2\n" and (check / "moved.txt").exists()


def test_nothing_changed_leaves_the_branch_at_the_base(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)
    unit = jw.open("exec-1", 2, "k")
    (unit.path / "x.log").write_text("ignored only")
    changes = jw.capture(unit, "m")
    assert not changes.changed and changes.commit is None and changes.patch == "" and changes.summary() == "no changes"
    assert sh(repo, "rev-parse", unit.branch) == jw.base


def test_a_fresh_attempt_starts_from_the_base_whatever_the_last_left(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)
    first = jw.open("exec-dead", 3, "k")
    (first.path / "src" / "a.py").write_text("half-edited\n")
    jw.capture(first, "first attempt")  # a commit on the branch, and the worktree left behind (a crash)
    other = jw.open("exec-dead", 9, "other")  # a dead executor's attempt at another unit
    second = jw.open("exec-live", 3, "k")
    assert second.branch == first.branch and not first.path.exists()  # the branch's stale holder is gone
    assert (second.path / "src" / "a.py").read_text() == "a = 1\n"
    assert sh(repo, "rev-parse", second.branch) == jw.base
    (second.path / "src" / "a.py").write_text("done\n")
    changes = jw.capture(second, "second attempt")
    assert sh(repo, "rev-list", "--count", f"{jw.base}..{second.branch}") == "1"
    assert "half-edited" not in changes.patch
    removed = jw.prune_dead_owners(lambda owner: owner == "exec-live")
    assert removed == [other.path] and not other.path.exists() and second.path.exists()
    assert not other.path.parent.exists()
    listed = sh(repo, "worktree", "list", "--porcelain")
    assert str(other.path) not in listed and str(first.path) not in listed and str(second.path) in listed


def test_a_reused_worktree_holds_exactly_the_base(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)
    first = jw.open("exec-1", 4, "k")
    (first.path / "src" / "a.py").write_text("committed edit\n")
    jw.capture(first, "first")
    (first.path / "src" / "b.py").write_text("uncommitted edit\n")
    (first.path / "junk").write_text("x")
    (first.path / "build.log").write_text("ignored file")
    (first.path / "newdir").mkdir()
    (first.path / "newdir" / "f").write_text("x")
    jw.close(first)
    again = jw.open("exec-1", 4, "k")  # the same unit's retry, in the idle worktree
    assert again.path == first.path
    assert sh(again.path, "status", "--porcelain", "--ignored") == ""
    assert (again.path / "src" / "a.py").read_text() == "a = 1\n"
    assert (again.path / "src" / "b.py").read_text() == "b = 1\n"
    assert sh(repo, "rev-parse", again.branch) == jw.base
    jw.close(again)
    other = jw.open("exec-1", 5, "other")  # another unit
    assert other.path == first.path and sh(other.path, "rev-parse", "--abbrev-ref", "HEAD") == other.branch
    busy = jw.open("exec-1", 6, "third")  # while the idle one is taken: a new worktree
    assert busy.path != other.path
    # the branch of an idle worktree's last unit is free for another owner
    jw.close(other)
    elsewhere = jw.open("exec-2", 5, "other")
    assert elsewhere.path.parent.name == "exec-2"


def test_keep_moves_the_worktree_aside_and_remove_all_clears_it(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)
    unit = jw.open("exec-1", 5, "k")
    (unit.path / "new.txt").write_text("x\n")
    jw.capture(unit, "m")
    kept = jw.close(unit, keep=True)
    assert kept is not None and (kept / "new.txt").read_text() == "x\n" and not unit.path.exists()
    assert jw.prune_dead_owners(lambda owner: False) == []  # kept worktrees are not a dead owner's
    jw.remove_all()
    assert not kept.exists() and sh(repo, "worktree", "list").count("\n") == 0


def test_parallel_attempts_on_one_repository(repo: Path, tmp_path: Path) -> None:
    jw = worktrees(repo, tmp_path)

    def one(number: int) -> tuple[str, list[str]]:
        unit = jw.open(f"exec-{number % 3}", number, f"key{number}")
        lines = (unit.path / "shared.txt").read_text().splitlines()
        lines[number] = f"edited by {number}"
        (unit.path / "shared.txt").write_text("\n".join(lines) + "\n")
        changes = jw.capture(unit, f"unit {number}")
        jw.close(unit)
        return changes.patch, [f.path for f in changes.files]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(1, 17)))
    for number, (patch, paths) in enumerate(results, start=1):
        assert paths == ["shared.txt"]
        edits = [line for line in patch.splitlines() if line.startswith("+edited")]
        assert edits == [f"+edited by {number}"]
    assert 3 <= jw.release_idle() < 16  # idle worktrees were reused
    assert sh(repo, "worktree", "list").count("\n") == 0
    assert len(sh(repo, "branch", "--list", "abp/7/*").splitlines()) == 16


def test_parse_numstat_renames_and_binaries() -> None:
    files = parse_numstat("1\t2\ta.py\0-\t-\tlogo.bin\0" "0\t0\t\0old.txt\0new.txt\0")
    assert [(f.path, f.added, f.deleted, f.old_path) for f in files] == [
        ("a.py", 1, 2, None), ("logo.bin", None, None, None), ("new.txt", 0, 0, "old.txt")]


def _leave_behind(path: Path) -> None:
    """Every kind of leftover an attempt (its agent, its verifier, a stray process) can leave."""
    (path / "src" / "a.py").write_text("modified, not committed\n")   # modified tracked file
    (path / "src" / "b.py").unlink()                                 # deleted tracked file
    (path / "logo.bin").write_bytes(b"\0changed")                    # modified binary
    (path / "untracked.txt").write_text("new\n")                      # new file
    (path / "newdir" / "deeper").mkdir(parents=True)                  # untracked directories
    (path / "newdir" / "deeper" / "f.py").write_text("x = 1\n")
    (path / "empty_dir").mkdir()
    (path / "debug.log").write_text("ignored\n")                      # ignored by .gitignore
    (path / "cache").mkdir()
    (path / "cache" / "run.log").write_text("ignored in a new dir\n")
    (path / "shared.txt").rename(path / "renamed.txt")                # renamed
    sh(path, "add", "untracked.txt")                                  # staged, not committed


def _holds_exactly_the_base(path: Path, repo: Path) -> None:
    assert sh(path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if ".git" not in p.parts)
    assert files == sorted(sh(repo, "ls-files").splitlines() + ["src"])
    for name in sh(repo, "ls-files").splitlines():
        assert (path / name).read_bytes() == (repo / name).read_bytes(), name


@pytest.mark.parametrize("when", ["after capture", "without capture", "agent committed"])
def test_leftovers_never_leak_into_the_next_unit_of_the_slot(repo: Path, tmp_path: Path, when: str) -> None:
    """One slot (one worktree made ahead with `prepare`) runs unit after unit: whatever the last one
    left, committed or not, tracked or ignored, the next starts from exactly the base and its diff
    holds only its own change."""
    jw = worktrees(repo, tmp_path)
    assert jw.prepare("exec-1", 1) == 1 and jw.prepare("exec-1", 1) == 0
    first = jw.open("exec-1", 1, "first")
    _holds_exactly_the_base(first.path, repo)
    if when == "agent committed":
        (first.path / "src" / "a.py").write_text("committed by the agent\n")
        sh(first.path, "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qam", "agent")
    if when != "without capture":
        (first.path / "src" / "a.py").write_text("captured edit\n")
        jw.capture(first, "first")
    _leave_behind(first.path)  # after the capture: what a verifier or a stray process writes
    jw.close(first)
    second = jw.open("exec-1", 2, "second")
    assert second.path == first.path  # the same slot
    _holds_exactly_the_base(second.path, repo)
    assert sh(second.path, "rev-parse", "--abbrev-ref", "HEAD") == second.branch
    assert sh(repo, "rev-parse", second.branch) == jw.base
    (second.path / "src" / "b.py").write_text("b = 2\n")
    changes = jw.capture(second, "second")
    assert [f.path for f in changes.files] == ["src/b.py"]
    assert sh(repo, "rev-list", "--count", f"{jw.base}..{second.branch}") == "1"
    jw.close(second)
    assert sh(second.path, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # idle: detached, its branch free
    assert jw.release_idle() == 1 and sh(repo, "worktree", "list").count("\n") == 0
    assert not second.path.exists() and not (jw.root / ".trash").exists()


def test_combined_numstat_and_patch_output_is_split_where_git_puts_the_separator() -> None:
    from agentic_batch.isolation.worktree import split_numstat_patch

    assert split_numstat_patch("") == ("", "")
    patch = "diff --git a/a.py b/a.py\n"
    assert split_numstat_patch("1\t0\ta.py\0\0" + patch) == ("1\t0\ta.py\0", patch)
    numstat, patch = split_numstat_patch("0\t0\t\0old\0new\0\0diff --git a/old b/new\n")
    assert [f.old_path for f in parse_numstat(numstat)] == ["old"] and patch.startswith("diff --git")
