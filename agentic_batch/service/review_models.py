"""The read models of reviewing and applying an isolated job's changes (`--isolate worktree`): a unit's
diff, the job's changes list, review marks, what `apply` and `clean` did.

The same contract as `service.models` (one declaration per answer, its JSON is the REST API's JSON),
kept in a module of its own so that one stays a readable size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentic_batch.service.models import ReadModel
from agentic_batch.states import UnitStatus

Review = Literal["accepted", "rejected"]
VerifyState = Literal["passed", "failed"]


class FileChangeView(ReadModel):
    """One file a unit changed; `added`/`deleted` are null for a binary file."""

    path: str
    old_path: str | None = Field(description="The file's path before a rename.")
    added: int | None
    deleted: int | None


class UnitChanges(ReadModel):
    """A unit's changes in a line: a row of the job's changes list (`abp diff JOB --stat`)."""

    number: int
    key: str
    status: UnitStatus
    branch: str | None = Field(description="The unit's branch (abp/<job>/<number>-<key>); null before it ran.")
    commit: str | None = Field(description="The commit its latest attempt made; null when it changed nothing.")
    files: int
    added: int
    deleted: int
    verify: VerifyState | None = Field(description="The job's verify command on the latest attempt; null when the "
                                                   "job has none or it has not run.")
    review: Review | None = Field(description="The reviewer's mark on this commit (a unit that ran again is "
                                              "unreviewed).")


class JobChanges(ReadModel):
    """Every unit of an isolated job with its changes, in number order."""

    job_id: int
    repo: str
    base_commit: str
    units: list[UnitChanges]
    changed: int = Field(description="Units whose latest attempt changed something.")
    files: int = Field(description="Files changed, summed over the units.")
    added: int
    deleted: int


class UnitDiff(UnitChanges):
    """A unit's changes in full: its files and its patch against the job's base commit."""

    job_id: int
    base_commit: str
    changes: list[FileChangeView]
    patch: str = Field(description="`git diff --binary` of the base and the unit's commit (empty: no changes).")
    verify_output: str | None


class ReviewMarks(ReadModel):
    """Units marked (or unmarked) by `review`."""

    job_id: int
    review: Review | None
    units: list[int]


class ApplyConflict(ReadModel):
    """A unit left out because its changes conflict."""

    number: int
    files: list[str]
    with_units: list[int] = Field(description="Units already on the branch whose changes it conflicts with.")
    with_target: bool = Field(description="It conflicts with the branch's own changes (not this job's units).")


class ApplyResult(ReadModel):
    """What `apply` did: the branch, and where every unit of the job ended up."""

    job_id: int
    branch: str
    created: bool = Field(description="The branch was made (from the base) by this apply.")
    head: str | None = Field(description="The branch's head afterwards; null when it does not exist.")
    squash: bool
    applied: list[int]
    already_applied: list[int]
    conflicts: list[ApplyConflict]
    unchanged: list[int] = Field(description="Selected units whose attempt changed nothing.")
    unfinished: list[int] = Field(description="Selected units without a completed result to apply.")
    not_selected: list[int]
    commits: list[str] = Field(description="Commits made, oldest first.")
    worktree: str | None = Field(description="The checkout that had the branch and was fast-forwarded.")


class CleanResult(ReadModel):
    """What `clean` removed."""

    job_id: int
    branches_removed: int
    worktrees_removed: bool
    claude_dir_removed: bool
    kept: list[str] = Field(description="Branches left in place: the applied branch, or ones checked out.")
