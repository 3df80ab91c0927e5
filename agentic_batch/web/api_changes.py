"""REST: an isolated job's changes (`--isolate worktree`): the changes list, a unit's diff, review
marks, apply onto a branch, clean. The same service calls as `abp diff|review|apply|clean`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.service import Orchestrator
from agentic_batch.service.review_models import (ApplyResult, CleanResult, JobChanges, Review, ReviewMarks,
                                                 UnitDiff)
from agentic_batch.web.deps import orchestrator

router = APIRouter(prefix="/api", tags=["changes"])
Orch = Annotated[Orchestrator, Depends(orchestrator)]

#: `3,7-12`: unit numbers and ranges.
UNIT_LIST = r"^ *[0-9]{1,10}(-[0-9]{1,10})? *(, *[0-9]{1,10}(-[0-9]{1,10})? *)*$"
Units = Annotated[str, Field(pattern=UNIT_LIST, max_length=10_000, description="Unit numbers and ranges: `3,7-12`.")]


class ReviewRequest(BaseModel):
    """Like `abp review JOB UNITS --accept|--reject|--clear`."""

    model_config = ConfigDict(extra="forbid")
    units: Units | list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        description="The units to mark: `3,7-12` or a list of numbers.")
    review: Review | None = Field(description="accepted, rejected, or null to remove the mark.")


class ApplyRequest(BaseModel):
    """Like `abp apply JOB [--units LIST | --accepted] [--onto BRANCH] [--squash]`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": {"required": ["units", "accepted"],
                                                                         "properties": {"accepted": {"const": True}}}})
    units: Units | None = Field(default=None, description="Only these units (default: every completed unit "
                                                          "with changes).")
    accepted: bool = Field(default=False, description="Only the units marked accepted.")
    onto: str | None = Field(default=None, min_length=1, max_length=256,
                             description="An existing branch (refused if checked out with uncommitted changes); "
                                         "default: a new branch abp/<job>/applied from the job's base.")
    squash: bool = Field(default=False, description="One commit for all the units (default: one per unit).")


@router.get("/jobs/{job}/changes", summary="An isolated job's changes")
def job_changes(job: str, orch: Orch) -> JobChanges:
    """Every unit with its files and +/- against the job's base, its verify state and review mark,
    in number order (no patches: those are at `.../units/{unit}/diff`)."""
    return orch.changes(job)


@router.get("/jobs/{job}/units/{unit}/diff", summary="A unit's diff")
def unit_diff(job: str, unit: str, orch: Orch) -> UnitDiff:
    """The unit's changed files and its patch (`git diff --binary` of the base and its commit)."""
    return orch.diff(job, unit)


@router.post("/jobs/{job}/review", summary="Mark units accepted or rejected")
def review_units(job: str, body: ReviewRequest, orch: Orch) -> ReviewMarks:
    """A mark holds for the commit the unit has now: a unit that runs again is unreviewed."""
    return orch.review(job, body.units, body.review)


@router.post("/jobs/{job}/apply", summary="Apply units' changes onto a branch")
def apply_changes(job: str, orch: Orch, body: ApplyRequest | None = None) -> ApplyResult:
    """Three-way merges in unit order, in git's object database (no checkout is touched, unless `onto`
    is checked out: then that clean checkout is fast-forwarded); a conflicting unit is skipped whole
    and reported; applying again skips what is already there."""
    body = body or ApplyRequest()
    return orch.apply(job, units=body.units, accepted=body.accepted, onto=body.onto, squash=body.squash)


@router.post("/jobs/{job}/clean", summary="Remove a job's branches and worktrees")
def clean_job(job: str, orch: Orch) -> CleanResult:
    """The unit branches, worktrees and the job's private Claude config; the applied branch stays.
    Refused while the job runs."""
    return orch.clean(job)
