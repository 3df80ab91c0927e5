"""Removing what an isolated job left in the repository: its unit branches (`abp clean`).

The worktrees are `JobWorktrees.remove_all()`'s; this deletes the branches `abp/<job>/*` in one ref
transaction. The applied branch (`abp/<job>/applied`) is the user's result and stays, as does any
branch checked out somewhere (deleting it would orphan that checkout's HEAD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentic_batch.isolation.apply import applied_branch
from agentic_batch.isolation.git import git, git_out
from agentic_batch.isolation.repo_lock import repo_lock


@dataclass
class BranchCleanup:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def job_branches(repo: Path, job_id: int) -> list[str]:
    """The branches under `abp/<job>/`."""
    out = git_out(repo, "for-each-ref", "--format=%(refname:lstrip=2)", f"refs/heads/abp/{job_id}/")
    return [line for line in out.splitlines() if line]


def checked_out_branches(repo: Path) -> set[str]:
    listing = git_out(repo, "worktree", "list", "--porcelain", "-z")
    return {line.removeprefix("branch refs/heads/") for line in listing.split("\0") if line.startswith("branch ")}


def delete_job_branches(repo: Path, job_id: int, lock_dir: Path) -> BranchCleanup:
    """Delete the job's unit branches (not its applied branch, not a checked-out one)."""
    result = BranchCleanup()
    with repo_lock(lock_dir, repo):
        busy = checked_out_branches(repo) | {applied_branch(job_id)}
        for branch in job_branches(repo, job_id):
            (result.kept if branch in busy else result.removed).append(branch)
        if result.removed:
            git(repo, "update-ref", "--stdin", input="".join(f"delete refs/heads/{b}\n" for b in result.removed))
    return result
