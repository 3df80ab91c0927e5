"""The base commit of an isolated job, fixed at create time.

Every attempt of every unit starts from this one commit, so a job's diffs are comparable and a
retry never sees a neighbour's edits. The repository is the one containing the job's files (or its
working directory); uncommitted changes are not part of a commit, which the user is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.isolation.git import GitError, git, git_out


@dataclass(frozen=True)
class Base:
    """Where an isolated job's worktrees come from."""

    #: The repository's top-level directory (the user's checkout).
    repo: Path
    #: Full commit id every attempt starts from.
    commit: str
    #: The ref the user named (or HEAD).
    ref: str
    #: Paths with uncommitted changes in the checkout (not part of the base), at most a few.
    dirty: list[str]

    def warning(self) -> str | None:
        """The line to show when the checkout has changes the base lacks."""
        if not self.dirty:
            return None
        shown = ", ".join(self.dirty[:5]) + (", …" if len(self.dirty) > 5 else "")
        return (f"{self.repo} has uncommitted changes that are not part of the base {self.commit[:12]} "
                f"({shown}); commit them first if the units need them")


def repo_root(path: Path) -> Path:
    """The top-level directory of the git repository containing `path` (a file or a directory)."""
    start = path if path.is_dir() else path.parent
    try:
        return Path(git_out(start, "rev-parse", "--show-toplevel")).resolve()
    except (GitError, FileNotFoundError, NotADirectoryError):
        raise InvalidSpec(f"{path} is not in a git repository; {field_ref('isolate')} worktree needs one",
                          hint="run `git init` and commit, or create the job from inside a repository") from None


def resolve_base(where: Path, ref: str | None = None) -> Base:
    """The repository containing `where` and the commit `ref` (default HEAD) names in it."""
    root = repo_root(where)
    name = ref or "HEAD"
    if name.startswith("-"):
        raise InvalidSpec(f"{field_ref('base')}: {name!r} is not a commit")
    proc = git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}", check=False)
    if proc.returncode != 0:
        what = "the repository has no commit yet" if ref is None else f"{name!r} is not a commit in {root}"
        raise InvalidSpec(f"{field_ref('base')}: {what}",
                          hint="commit first" if ref is None else "give a branch, tag or commit id")
    return Base(repo=root, commit=proc.stdout.strip(), ref=name, dirty=uncommitted(root))


def uncommitted(root: Path) -> list[str]:
    """Paths in the checkout that differ from HEAD (modified, staged, untracked; not ignored)."""
    entries = iter(git(root, "status", "--porcelain", "-z", "--untracked-files=normal").stdout.split("\0"))
    paths = []
    for entry in entries:
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename's or copy's old path follows as its own entry
                next(entries, None)
    return paths
