"""A unit's attempt in its own git worktree: open it holding exactly the base, capture what the agent
changed as one commit and a patch, then let it go (its branch stays).

Layout under the job's directory (`$ABP_HOME/jobs/<job>/worktrees`):

    <owner>/w<k>/              a worktree of one executor (or test run): in use by one attempt, or idle
                               between two (reset to the base when reused; removed when the run ends)
    kept/<number>-<slug>/      a finished attempt's worktree, with `--keep-worktrees`
    .trash/                    released worktrees git has forgotten, their files being deleted

so the worktrees a dead executor left behind are the ones under its id (`prune_dead_owners`). The
unit's branch is `abp/<job>/<number>-<slug>`; every attempt resets it to the base, so whatever an
earlier attempt (or a killed executor) left on it never leaks into the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentic_batch.isolation.git import COMMIT_CONFIG, GitError, git, git_out
from agentic_batch.isolation.repo_lock import repo_lock

#: Subdirectory of the job's directory holding its worktrees.
WORKTREES = "worktrees"
#: Owner directory name of finished attempts' worktrees kept with `--keep-worktrees`.
KEPT = "kept"
#: Where released worktrees are moved (git forgets them) before their files are deleted; what a
#: killed executor left here is removed like a dead owner's worktrees.
TRASH = ".trash"
_SLUG_MAX = 40
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Makes a worktree's index and tracked files the given commit (or HEAD), rewriting only what differs.
_RESET = ("reset", "--quiet", "--hard", "--no-recurse-submodules")


def key_slug(key: str) -> str:
    """The tail of a unit's key as a branch- and file-name-safe word (`src/a b.py` -> `src-a-b.py`)."""
    slug = _UNSAFE.sub("-", key).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)[-_SLUG_MAX:].strip("-.")
    slug = slug.removesuffix(".lock").strip("-.")
    return slug or "unit"


def branch_name(job_id: int, number: int, key: str) -> str:
    return f"abp/{job_id}/{number}-{key_slug(key)}"


@dataclass(frozen=True)
class FileChange:
    """One changed file: its path (the new one for a rename), lines added/deleted (None when binary)."""

    path: str
    added: int | None
    deleted: int | None
    old_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "added": self.added, "deleted": self.deleted, "old_path": self.old_path}


@dataclass(frozen=True)
class Changes:
    """What an attempt changed, relative to the base: the commit on its branch, the patch and stats."""

    branch: str
    base: str
    #: The branch's head after the attempt; None when nothing changed (the branch stays at the base).
    commit: str | None
    patch: str
    files: list[FileChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.files)

    @property
    def added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def deleted(self) -> int:
        return sum(f.deleted or 0 for f in self.files)

    def stats(self) -> dict[str, Any]:
        """The stored summary (`abp diff --stat`, the changes view)."""
        return {"branch": self.branch, "base": self.base, "commit": self.commit, "files": len(self.files),
                "added": self.added, "deleted": self.deleted, "changes": [f.to_dict() for f in self.files]}

    def summary(self) -> str:
        if not self.changed:
            return "no changes"
        return f"{len(self.files)} file(s) changed, +{self.added} -{self.deleted}"


@dataclass(frozen=True)
class UnitWorktree:
    """An attempt's checkout: `path` on `branch`, made from the job's base commit."""

    path: Path
    branch: str
    number: int
    key: str


class JobWorktrees:
    """The worktrees of one isolated job: a repository, a base commit, a directory under ABP_HOME."""

    def __init__(self, *, repo: Path, base: str, job_id: int, job_dir: Path, lock_dir: Path) -> None:
        self.repo = repo
        self.base = base
        self.job_id = job_id
        self.root = job_dir / WORKTREES
        self.lock_dir = lock_dir
        self._real_repo = repo.resolve()
        #: Worktrees whose attempt is over, by owner, ready for the owner's next attempt.
        self._idle: dict[str, list[Path]] = {}
        self._idle_lock = threading.Lock()
        #: Idle worktrees made by `prepare` and not used yet: they hold exactly the base already.
        self._fresh: set[Path] = set()
        #: Released worktrees moved under TRASH, git done with them, their files not deleted yet.
        self._released: list[Path] = []
        self._made = 0

    # -- one attempt ---------------------------------------------------------------------------------

    def open(self, owner: str, number: int, key: str) -> UnitWorktree:
        """A worktree holding exactly the base for this attempt, on the unit's branch reset to the base.

        An idle worktree this owner finished with earlier (or made ahead with `prepare`) is reused when
        there is one: `reset --hard` plus `clean -ffdx` makes it the base again by rewriting only what
        the last unit changed, where a new checkout writes the whole repository (seconds for 50 MB on a
        busy machine). Otherwise a new one is added."""
        branch = branch_name(self.job_id, number, key)
        with self._idle_lock:
            idle = self._idle.get(owner)
            path = idle.pop() if idle else None
        if path is not None:
            try:
                if path in self._fresh:
                    self._fresh.discard(path)
                    self._attach(path, branch)
                else:
                    self._reset(path, branch)
                return UnitWorktree(path=path, branch=branch, number=number, key=key)
            except GitError:  # a damaged worktree: replace it with a new one
                with repo_lock(self.lock_dir, self.repo):
                    self._remove_locked(path)
        with repo_lock(self.lock_dir, self.repo):  # the owner's directory too: close() removes it when empty
            path = self._new_path(owner)
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = self.root / KEPT / f"{number}-{key_slug(key)}"
            if kept.exists():  # an earlier attempt's worktree, kept: this attempt's branch moves on
                self._remove_locked(kept)
            # --no-checkout: only git's bookkeeping under the lock; the files are written after it
            add = ("worktree", "add", "--quiet", "--force", "--no-checkout", "-B", branch, str(path), self.base)
            try:
                git(self.repo, *add)
            except GitError:  # the branch is checked out elsewhere: a dead executor's attempt, not pruned yet
                self._free_branch_locked(branch)
                git(self.repo, *add)
        git(path, *_RESET)  # the whole checkout, outside the lock: in parallel
        return UnitWorktree(path=path, branch=branch, number=number, key=key)

    def prepare(self, owner: str, count: int) -> int:
        """Make idle worktrees of the base for `owner` until it has `count`, before its first attempt:
        the whole checkouts are paid once, before any unit is claimed, instead of inside the first
        `count` units' time. Checkouts run in parallel up to the number of CPUs (they are CPU-bound:
        thousands of files created). Returns how many were made."""
        with self._idle_lock:
            need = count - len(self._idle.get(owner, []))
        if need <= 0:
            return 0
        made: list[Path] = []
        with repo_lock(self.lock_dir, self.repo):
            for _ in range(need):
                path = self._new_path(owner)
                path.parent.mkdir(parents=True, exist_ok=True)
                git(self.repo, "worktree", "add", "--quiet", "--force", "--no-checkout", "--detach", str(path),
                    self.base)
                made.append(path)
        with ThreadPoolExecutor(max(1, min(len(made), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda path: git(path, *_RESET), made))
        with self._idle_lock:
            self._idle.setdefault(owner, []).extend(made)
            self._fresh.update(made)
        return len(made)

    def _new_path(self, owner: str) -> Path:
        while True:
            self._made += 1
            path = self.root / owner / f"w{self._made}"
            if not path.exists():
                return path

    def _reset(self, path: Path, branch: str) -> None:
        """Make an idle worktree the base again, on `branch`: tracked files back to the base (git
        rewrites only those whose content differs), every untracked and ignored file gone.

        Three plumbing-level steps, no porcelain checkout: HEAD is pointed at the unit's branch
        (`symbolic-ref`, no check that another worktree holds it: only a dead executor's could, and
        it is pruned), then `reset --hard` to the base creates or moves that branch and rewrites the
        index and files, then `clean -ffdx`. Two passes over the tree (an lstat of every tracked file,
        a walk for untracked ones) are what makes reuse safe whatever the last attempt (or its
        verifier, or a stray process) left."""
        git(path, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        git(path, *_RESET, self.base)
        git(path, "clean", "--quiet", "-ffdx")

    def _attach(self, path: Path, branch: str) -> None:
        """Put a fresh worktree (exactly the base, HEAD detached there) on `branch`, reset to the base:
        refs only, no pass over the files."""
        git(path, "update-ref", f"refs/heads/{branch}", self.base)
        git(path, "symbolic-ref", "HEAD", f"refs/heads/{branch}")

    def _free_branch_locked(self, branch: str) -> None:
        holders = self._checked_out(branch)
        if not holders:
            raise GitError(["worktree", "add"], 128, f"cannot check out {branch}")
        for holder in holders:
            self._forget_idle(holder)
            self._remove_locked(holder)

    def _forget_idle(self, path: Path) -> None:
        with self._idle_lock:
            self._fresh.discard(path)
            for paths in self._idle.values():
                if path in paths:
                    paths.remove(path)

    def capture(self, unit: UnitWorktree, message: str) -> Changes:
        """Commit everything the agent changed (new, modified, deleted, renamed, binary; .gitignore
        respected) on the unit's branch, and describe it relative to the base.

        Plumbing rather than `commit` + `diff`: one pass over the tree (`add --all`), then the tree
        from the index, the commit and the branch update without a second pass, and the stats and
        patch from one `diff-tree` of two trees (`--numstat` and `-p` together). Plumbing also
        ignores the user's diff settings (noprefix, external diff, colour) that would spoil a patch."""
        wt = unit.path
        git(wt, "add", "--all", "--", ".")
        tree = git_out(wt, "write-tree")
        # the agent may have committed itself: its commits are the parent, and count too
        head, head_tree, branch_head = git_out(wt, "rev-parse", "HEAD", "HEAD^{tree}",
                                               f"refs/heads/{unit.branch}").split("\n")
        commit = head
        if tree != head_tree:
            made = git(wt, *COMMIT_CONFIG, "commit-tree", tree, "-p", head, "-m", message, identity=True)
            commit = made.stdout.strip()
        if commit != branch_head:
            git(wt, "update-ref", f"refs/heads/{unit.branch}", commit)
        if commit == self.base:
            return Changes(branch=unit.branch, base=self.base, commit=None, patch="")
        out = git(wt, "diff-tree", "-r", "-z", "--numstat", "-p", "--binary", "--find-renames", "--no-ext-diff",
                  self.base, commit).stdout
        numstat, patch = split_numstat_patch(out)
        return Changes(branch=unit.branch, base=self.base, commit=commit, patch=patch, files=parse_numstat(numstat))

    def close(self, unit: UnitWorktree, keep: bool = False) -> Path | None:
        """The attempt is over: its worktree goes idle for the owner's next attempt (HEAD detached, so
        the branch is free; the files stay until then) or, with `keep`, moves under `kept/` and is
        returned."""
        if not keep:
            try:  # detach without touching the index or files (a `checkout --detach` stats them all)
                git(unit.path, "update-ref", "--no-deref", "HEAD", "HEAD")
            except GitError:
                with repo_lock(self.lock_dir, self.repo):
                    self._remove_locked(unit.path)
                    _remove_if_empty(unit.path.parent)
                return None
            with self._idle_lock:
                self._idle.setdefault(unit.path.parent.name, []).append(unit.path)
            return None
        with repo_lock(self.lock_dir, self.repo):
            kept = self.root / KEPT / f"{unit.number}-{key_slug(unit.key)}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            if kept.exists():
                self._remove_locked(kept)
            git(self.repo, "worktree", "move", str(unit.path), str(kept))
            _remove_if_empty(unit.path.parent)
            return kept

    def release_idle(self, defer: bool = False) -> int:
        """Remove the idle worktrees (when a run ends: disk use stays bounded by the concurrency while
        it runs, and nothing stays after). Returns how many were removed.

        Under the repository's lock each is only moved aside and git forgets it (one `worktree
        prune`); deleting the files (thousands each) runs after, outside the lock, one directory per
        CPU: now, or with `defer` when `delete_released()` is called (after the job has ended: its
        results do not wait for the deletion)."""
        with self._idle_lock:
            idle, self._idle = self._idle, {}
            self._fresh.clear()
        paths = [path for paths in idle.values() for path in paths]
        if not paths:
            return 0
        trash = self.root / TRASH
        with repo_lock(self.lock_dir, self.repo):
            trash.mkdir(parents=True, exist_ok=True)
            for path in paths:
                target = trash / f"{path.parent.name}-{path.name}"
                try:
                    path.rename(target)
                    self._released.append(target)
                except OSError:  # gone already, or not movable: the slow way
                    self._remove_locked(path)
                _remove_if_empty(path.parent)
            git(self.repo, "worktree", "prune", check=False)
        if not defer:
            self.delete_released()
        return len(paths)

    def delete_released(self) -> int:
        """Delete the files of the worktrees `release_idle` moved aside; returns how many."""
        moved, self._released = self._released, []
        with ThreadPoolExecutor(max(1, min(len(moved), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda path: shutil.rmtree(path, ignore_errors=True), moved))
        _remove_if_empty(self.root / TRASH)
        return len(moved)

    def map_path(self, unit: UnitWorktree, path: Path) -> Path | None:
        """`path` (in the user's checkout) as the same path inside the attempt's worktree, or None
        when it is outside the repository."""
        for candidate in (path, path.resolve()):
            try:
                rel = candidate.relative_to(self.repo if candidate is path else self._real_repo)
            except ValueError:
                continue
            return unit.path / rel
        return None

    # -- housekeeping --------------------------------------------------------------------------------

    def prune_dead_owners(self, alive: Callable[[str], bool]) -> list[Path]:
        """Remove the worktrees of owners (executors, test runs) that are no longer alive; returns them."""
        if not self.root.is_dir():
            return []
        removed: list[Path] = []
        with repo_lock(self.lock_dir, self.repo):
            for owner_dir in sorted(self.root.iterdir()):
                if owner_dir.name == KEPT or not owner_dir.is_dir() or alive(owner_dir.name):
                    continue
                for worktree in sorted(owner_dir.iterdir()):
                    self._remove_locked(worktree)
                    removed.append(worktree)
                shutil.rmtree(owner_dir, ignore_errors=True)
            git(self.repo, "worktree", "prune", check=False)
        return removed

    def remove_all(self) -> None:
        """Every worktree of the job (kept ones too); branches stay."""
        if not self.root.is_dir():
            return
        with repo_lock(self.lock_dir, self.repo):
            for owner_dir in sorted(self.root.iterdir()):
                for worktree in sorted(owner_dir.iterdir()) if owner_dir.is_dir() else []:
                    self._remove_locked(worktree)
            shutil.rmtree(self.root, ignore_errors=True)
            git(self.repo, "worktree", "prune", check=False)

    def _checked_out(self, branch: str) -> list[Path]:
        """Worktrees that have `branch` checked out."""
        listing = git_out(self.repo, "worktree", "list", "--porcelain", "-z")
        holders, path = [], None
        for line in listing.split("\0"):
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line == f"branch refs/heads/{branch}" and path is not None and path != self.repo:
                holders.append(path)
        return holders

    def _remove_locked(self, path: Path) -> None:
        """Remove one worktree (caller holds the repo lock); a directory git no longer knows is deleted."""
        try:
            git(self.repo, "worktree", "remove", "--force", "--force", str(path))
        except GitError:
            shutil.rmtree(path, ignore_errors=True)
            git(self.repo, "worktree", "prune", check=False)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty (another attempt of the owner), or already gone
        pass


def split_numstat_patch(text: str) -> tuple[str, str]:
    """`diff-tree -z --numstat -p`: the NUL-terminated numstat records, one more NUL, then the patch
    (which holds no NUL: git shows a file with one as binary, base85-encoded)."""
    if not text or text.startswith("diff --git "):
        return "", text
    end = text.find("\0\0")
    if end < 0:
        return text, ""
    return text[:end + 1], text[end + 2:]


def parse_numstat(text: str) -> list[FileChange]:
    """`git diff --numstat -z`: `A\\tD\\tPATH\\0`, or `A\\tD\\t\\0OLD\\0NEW\\0` for a rename; `-` for binary."""
    fields = iter(text.split("\0"))
    files = []
    for head in fields:
        if not head:
            continue
        added, deleted, path = head.split("\t", 2)
        old = None
        if not path:  # a rename or copy: the old and new paths follow
            old, path = next(fields, ""), next(fields, "")
        files.append(FileChange(path=path, old_path=old, added=None if added == "-" else int(added),
                                deleted=None if deleted == "-" else int(deleted)))
    return files
