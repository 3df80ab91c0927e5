"""Isolated workspaces for code-changing jobs (`--isolate worktree`).

Each attempt of a unit runs in a fresh git worktree of the job's base commit, on the unit's own
branch, never in the user's checkout; what the agent changed is committed there and its patch is the
unit's result. Git is run as argv lists (`git -C DIR ...`), never through a shell.
"""

from agentic_batch.isolation.base import Base, repo_root, resolve_base
from agentic_batch.isolation.git import GitError
from agentic_batch.isolation.worktree import (Changes, FileChange, JobWorktrees, UnitWorktree, branch_name,
                                              key_slug)

__all__ = ["Base", "Changes", "FileChange", "GitError", "JobWorktrees", "UnitWorktree", "branch_name", "key_slug",
           "repo_root", "resolve_base"]
