"""Apply chosen units' changes onto a branch: three-way merges in unit order, never in the user's
checkout, a conflicting unit skipped whole.

Everything is computed with plumbing (`git merge-tree --write-tree`, `git commit-tree`) in the
object database; the target branch moves once, at the end, by a compare-and-swap ref update (or, when
the branch is checked out in a clean worktree, by a fast-forward there). So a unit is never
half-applied, a failure leaves the branch as it was, and no working tree but the target's own is
touched.

Each unit is merged with *its* base as the merge base (cherry-pick semantics): git 2.39's merge-tree
has no `--merge-base`, so the side it merges into is a commit whose history holds the base and not the
unit's commits (the target itself when it contains the base, else a stand-in commit of the target's
tree whose parent is the base). The units applied are named in `Abp-Unit: <job>/<number> <commit>`
trailers of the commits made, which is how a re-run knows what is already there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.isolation.git import COMMIT_CONFIG, GitError, git, git_out
from agentic_batch.isolation.repo_lock import repo_lock

#: The trailer naming each unit a commit applied.
TRAILER = "Abp-Unit"
_TRAILER_VALUE = re.compile(r"^(\d+)/(\d+)(?:\s+([0-9a-f]{7,64}))?\s*$")
_KEY_SHOWN = 100


def applied_branch(job_id: int) -> str:
    """The branch `abp apply` makes when no `--onto` is given."""
    return f"abp/{job_id}/applied"


@dataclass(frozen=True)
class UnitCommit:
    """A unit to apply: its number, key (for the commit message) and the commit its attempt made."""

    number: int
    key: str
    commit: str


@dataclass(frozen=True)
class Conflict:
    """A unit skipped because its changes do not merge: the files, and who else changed them."""

    number: int
    files: list[str]
    #: Units already on the target (applied now or earlier) that changed one of these files.
    with_units: list[int]
    #: Some of the files conflict with changes of the target branch itself (not from this job's units).
    with_target: bool


@dataclass
class ApplyOutcome:
    """What `apply_units` did to the target branch."""

    branch: str
    #: The branch did not exist and was made (from the base).
    created: bool = False
    #: The branch's head afterwards (None: it does not exist, nothing was applied to a new branch).
    head: str | None = None
    applied: list[int] = field(default_factory=list)
    #: Units whose changes the branch already has (a trailer names them, or merging changes nothing).
    already_applied: list[int] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    #: Commits made, oldest first (one per unit, or one for all with squash).
    commits: list[str] = field(default_factory=list)
    #: The worktree that had the branch checked out and was fast-forwarded, if any.
    worktree: Path | None = None


@dataclass(frozen=True)
class Target:
    """The branch to apply onto, as found before anything is computed."""

    branch: str
    #: Its head now; None when it does not exist yet (the default branch, made from the base).
    head: str | None
    #: The worktree that has it checked out (it is fast-forwarded there), if any.
    worktree: Path | None


def find_target(repo: Path, branch: str, *, must_exist: bool) -> Target:
    """The branch to apply onto; refused (one line, nothing done) when it does not exist but must, or
    when it is checked out in a worktree with uncommitted changes."""
    if branch.startswith("-") or git(repo, "check-ref-format", "--branch", branch, check=False).returncode != 0:
        raise InvalidSpec(f"{field_ref('onto')}: {branch!r} is not a branch name")
    found = git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False)
    head = found.stdout.strip() if found.returncode == 0 else None
    if head is None and must_exist:
        raise InvalidSpec(f"{field_ref('onto')}: no branch {branch!r} in {repo}",
                          hint="name an existing branch, or leave it out to apply onto a new branch")
    worktree = checked_out_in(repo, branch)
    if worktree is not None and is_dirty(worktree):
        raise InvalidSpec(f"{field_ref('onto')}: branch {branch!r} is checked out in {worktree} with uncommitted "
                          f"changes", hint="commit or stash them first; apply moves that checkout")
    return Target(branch=branch, head=head, worktree=worktree)


def checked_out_in(repo: Path, branch: str) -> Path | None:
    """The worktree (the main checkout included) that has `branch` checked out, if any."""
    path: Path | None = None
    for line in git_out(repo, "worktree", "list", "--porcelain", "-z").split("\0"):
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}" and path is not None:
            return path
    return None


def is_dirty(worktree: Path) -> bool:
    """Tracked files modified or staged (untracked files do not stop a fast-forward unless in the way)."""
    return bool(git(worktree, "status", "--porcelain", "-z", "--untracked-files=no").stdout.strip("\0"))


def applied_units(repo: Path, head: str | None, base: str, job_id: int) -> dict[int, str]:
    """The units of this job the branch at `head` already holds, from the trailers of its commits since
    the base: number -> the unit's commit that was applied."""
    if head is None:
        return {}
    log = git_out(repo, "log", f"--format=%(trailers:key={TRAILER},valueonly,separator=%x00)%x00", head,
                  "--not", base)
    found: dict[int, str] = {}
    for value in log.split("\0"):
        match = _TRAILER_VALUE.match(value.strip())
        if match and int(match.group(1)) == job_id:
            found.setdefault(int(match.group(2)), match.group(3) or "")
    return found


class _Merger:
    """Merges units one by one into a tree that starts as the target's, remembering who changed what."""

    def __init__(self, repo: Path, base: str, start: str) -> None:
        self.repo, self.base = repo, base
        self.tree = git_out(repo, "rev-parse", f"{start}^{{tree}}")
        #: Commits made on top of the target reach the base through it (else through stand-ins).
        self.contains_base = git(repo, "merge-base", "--is-ancestor", base, start, check=False).returncode == 0
        # The side merged into: its history must reach the base but none of a unit's own commits.
        self.ours = start if self.contains_base else self.commit(self.tree, base, "abp apply: the target's tree")
        self._files: dict[str, frozenset[str]] = {}

    def commit(self, tree: str, parent: str, message: str) -> str:
        return git(self.repo, *COMMIT_CONFIG, "commit-tree", tree, "-p", parent, "-m", message,
                   identity=True).stdout.strip()

    def merge(self, commit: str) -> tuple[str | None, list[str]]:
        """(the merged tree, []) or (None, the conflicting files)."""
        proc = git(self.repo, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", self.ours, commit,
                   check=False)
        if proc.returncode not in (0, 1):
            raise GitError(["merge-tree", self.ours, commit], proc.returncode, proc.stderr)
        tree, *paths = [p for p in proc.stdout.split("\0") if p]
        return (tree, []) if proc.returncode == 0 else (None, sorted(set(paths)))

    def advance(self, tree: str, real_commit: str | None) -> None:
        """The merged tree becomes the side to merge into (through `real_commit` when one was made)."""
        self.tree = tree
        if real_commit is not None and self.contains_base:
            self.ours = real_commit
        else:
            self.ours = self.commit(tree, self.ours, "abp apply: intermediate")

    def merges_cleanly(self, one: str, other: str) -> bool:
        """Two units' commits (both on the base) merge without a conflict."""
        proc = git(self.repo, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", one, other,
                   check=False)
        return proc.returncode == 0

    def files_of(self, commit: str) -> frozenset[str]:
        """Paths a unit's commit changed relative to the base (both sides of a rename)."""
        if commit not in self._files:
            out = git(self.repo, "diff", "--name-only", "-z", "--no-renames", self.base, commit).stdout
            self._files[commit] = frozenset(p for p in out.split("\0") if p)
        return self._files[commit]


def apply_units(*, repo: Path, base: str, job_id: int, units: Sequence[UnitCommit], onto: str | None = None,
                squash: bool = False, lock_dir: Path) -> ApplyOutcome:
    """Apply `units` (in number order) onto `onto`, or onto the job's applied branch (made from the base).

    Per unit: already on the branch -> `already_applied`; merges cleanly -> `applied` (a commit each,
    or one commit for all with `squash`); conflicts -> `conflicts`, nothing of it applied."""
    target = find_target(repo, onto or applied_branch(job_id), must_exist=onto is not None)
    start = target.head or base
    outcome = ApplyOutcome(branch=target.branch, head=target.head)
    done = applied_units(repo, target.head, base, job_id)
    merger = _Merger(repo, base, start)
    on_target: dict[int, str] = {n: c for n, c in done.items() if c}
    tip, made = start, []
    for unit in sorted(units, key=lambda u: u.number):
        if unit.number in done:
            outcome.already_applied.append(unit.number)
            continue
        tree, conflicting = merger.merge(unit.commit)
        if tree is None:
            outcome.conflicts.append(_conflict(merger, unit, conflicting, on_target))
            continue
        if tree == merger.tree:  # the branch has these changes already (applied by hand, or merged)
            outcome.already_applied.append(unit.number)
            continue
        real = None
        if not squash:
            real = merger.commit(tree, tip, unit_message(job_id, unit))
            tip = real
            made.append(real)
        merger.advance(tree, real)
        on_target[unit.number] = unit.commit
        outcome.applied.append(unit.number)
    if squash and outcome.applied:
        taken = set(outcome.applied)
        chosen = [u for u in units if u.number in taken]
        tip = merger.commit(merger.tree, start, squash_message(job_id, sorted(chosen, key=lambda u: u.number)))
        made.append(tip)
    if made:
        _move_branch(repo, target, tip, lock_dir, job_id)
        outcome.created, outcome.head, outcome.commits = target.head is None, tip, made
        outcome.worktree = target.worktree
    return outcome


def _conflict(merger: _Merger, unit: UnitCommit, files: list[str], on_target: dict[int, str]) -> Conflict:
    """Name the units on the target the conflict is with: those touching one of the files whose changes
    do not merge with this unit's on their own (all of them touching the files, if none alone does)."""
    wanted = set(files)
    touching = sorted(n for n, commit in on_target.items() if wanted & merger.files_of(commit))
    alone = [n for n in touching if not merger.merges_cleanly(on_target[n], unit.commit)]
    with_units = alone or touching
    explained = set().union(*(merger.files_of(on_target[n]) for n in with_units))
    return Conflict(number=unit.number, files=files, with_units=with_units, with_target=bool(wanted - explained))


def _move_branch(repo: Path, target: Target, new: str, lock_dir: Path, job_id: int) -> None:
    """Point the branch at `new`, only if it is still where it was (else nothing moves)."""
    ref = f"refs/heads/{target.branch}"
    with repo_lock(lock_dir, repo):
        worktree = checked_out_in(repo, target.branch)
        if worktree is not None:
            if is_dirty(worktree):
                raise InvalidSpec(f"{field_ref('onto')}: branch {target.branch!r} got uncommitted changes in "
                                  f"{worktree} meanwhile; nothing was applied", hint="commit or stash them, then "
                                  "apply again")
            if git_out(worktree, "rev-parse", "HEAD") != target.head:
                raise InvalidSpec(f"branch {target.branch!r} moved meanwhile; nothing was applied", hint="apply again")
            git(worktree, "-c", "core.hooksPath=/dev/null", "merge", "--ff-only", "--quiet", new)
            return
        command = f"create {ref} {new}\n" if target.head is None else f"update {ref} {new} {target.head}\n"
        if git(repo, "update-ref", "-m", f"abp apply (job {job_id})", "--stdin", input=command,
               check=False).returncode != 0:
            raise InvalidSpec(f"branch {target.branch!r} moved meanwhile; nothing was applied", hint="apply again")


def _one_line(key: str) -> str:
    text = " ".join(key.split())
    return text if len(text) <= _KEY_SHOWN else text[:_KEY_SHOWN - 1] + "…"


def unit_message(job_id: int, unit: UnitCommit) -> str:
    return (f"abp job {job_id}, unit {unit.number}: {_one_line(unit.key)}\n\n"
            f"Applied by `abp apply {job_id}` from commit {unit.commit[:12]}.\n\n"
            f"{TRAILER}: {job_id}/{unit.number} {unit.commit}\n")


def squash_message(job_id: int, units: Sequence[UnitCommit]) -> str:
    listed = "".join(f"- unit {u.number}: {_one_line(u.key)}\n" for u in units)
    trailers = "".join(f"{TRAILER}: {job_id}/{u.number} {u.commit}\n" for u in units)
    return f"abp job {job_id}: {len(units)} unit(s) applied\n\n{listed}\n{trailers}"


def missing_commits(repo: Path, commits: Sequence[str]) -> set[str]:
    """Those of `commits` the repository does not have (a cleaned job's, once git collected them)."""
    if not commits:
        return set()
    out = git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", input="".join(f"{c}\n" for c in commits))
    present = {line.split()[0] for line in out.stdout.splitlines() if line.endswith(" commit")}
    return {c for c in commits if c not in present}
