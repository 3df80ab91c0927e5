"""Tools for an isolated job's changes (`--isolate worktree`): get_diff, review_changes, apply_changes,
clean_job. The same service calls as `abp diff|review|apply|clean`, shaped for a model's context:
the changes list is paged, a patch is cut to max_chars, and lists of unit numbers are ranges
(`1-40, 42`), so a 5,000-unit job's apply summary stays a few lines."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from agentic_batch.mcp_server.budget import fit_page
from agentic_batch.mcp_server.outputs import COMPACT, Reply
from agentic_batch.mcp_server.replies import respond
from agentic_batch.mcp_server.schemas import JobRef, MaxChars, UnitRef
from agentic_batch.mcp_server.toolkit import add_tool
from agentic_batch.refs import MAX_ID, format_unit_numbers
from agentic_batch.service import Orchestrator
from agentic_batch.service.models import plain
from agentic_batch.service.review_models import CleanResult, ReviewMarks

UnitList = Annotated[str, Field(min_length=1, max_length=10_000, description="Unit numbers and ranges: \"3,7-12\".")]


class DiffReply(Reply):
    """Without `unit`: the job's changes list (`units`, paged); with it: that unit's files and patch."""

    model_config = COMPACT
    job_id: int | None = None
    units: list[dict[str, Any]] | None = Field(default=None, description="Per unit: number, key, status, branch, "
                                                                         "commit, files, added, deleted, verify, "
                                                                         "review.")
    next_offset: int | None = Field(default=None, description="Call again with this offset for the next units.")
    number: int | None = None
    patch: str | None = Field(default=None, description="The unit's patch against the job's base.")
    changes: list[dict[str, Any]] | None = Field(default=None, description="The unit's files with +/- lines.")


class ApplyReply(Reply):
    """What apply_changes did; unit numbers as ranges (\"1-3, 7\")."""

    model_config = COMPACT
    summary: str | None = Field(default=None, description="One line to relay to the user.")
    branch: str | None = None
    head: str | None = None
    created: bool | None = None
    applied: str | None = None
    already_applied: str | None = None
    conflicts: list[dict[str, Any]] | None = Field(default=None, description="Per skipped unit: number, files, "
                                                                             "with_units, with_target.")
    unchanged: str | None = None
    unfinished: str | None = None
    not_selected: str | None = None


def register(server: MCPServer[Any], orch: Orchestrator) -> None:
    async def get_diff(
        job_id: JobRef,
        unit: Annotated[UnitRef | None, Field(description="One unit (its number, or \"key:KEY\"); omit for the "
                                                          "job's list of changes.")] = None,
        offset: Annotated[int, Field(ge=0, le=MAX_ID, description="Skip this many units of the list "
                                                                   "(paging).")] = 0,
        max_chars: MaxChars = 20_000,
    ) -> Annotated[CallToolResult, DiffReply]:
        """What an isolated job's agents changed (jobs created with isolate=worktree). Without unit: every unit's
        branch, files changed, lines added/deleted, verify state (passed/failed) and review mark (accepted/rejected),
        in unit order. With unit: that unit's changed files and its git patch against the job's base commit
        (cut to max_chars). Use it to review changes before apply_changes."""
        def call() -> dict[str, Any]:
            if unit is None:
                changes: dict[str, Any] = plain(orch.changes(job_id))
                changes["units"] = [{k: v for k, v in row.items() if v not in (None, "")}
                                    for row in changes["units"][offset:]]
                return fit_page(changes, "units", offset)
            diff: dict[str, Any] = plain(orch.diff(job_id, unit))
            patch = diff["patch"]
            if len(patch) > max_chars:
                diff["patch"] = patch[:max_chars]
                diff["note"] = (f"the patch was cut to {max_chars} of its {len(patch)} characters; call again with "
                                "a larger max_chars, or run `abp diff` for the whole patch")
            return diff

        return await respond(call)

    async def review_changes(
        job_id: JobRef,
        units: UnitList,
        review: Annotated[Literal["accepted", "rejected"] | None, Field(
            description="accepted, rejected, or null to remove the mark.")],
    ) -> Annotated[CallToolResult, ReviewMarks]:
        """Mark units of an isolated job accepted or rejected after reviewing their diffs (get_diff);
        apply_changes(accepted=true) then applies the accepted ones. A mark holds for the unit's current
        commit: a unit that runs again is unreviewed."""
        return await respond(lambda: orch.review(job_id, units, review))

    async def apply_changes(
        job_id: JobRef,
        units: Annotated[UnitList | None, Field(description="Only these units, e.g. \"3,7-12\" (default: every "
                                                            "completed unit with changes).")] = None,
        accepted: Annotated[bool, Field(description="Only the units marked accepted.")] = False,
        onto: Annotated[str | None, Field(min_length=1, max_length=256, description="An existing branch (refused "
                                          "if checked out with uncommitted changes); default: a new branch "
                                          "abp/<job>/applied from the job's base.")] = None,
        squash: Annotated[bool, Field(description="One commit for all units (default: one per unit).")] = False,
    ) -> Annotated[CallToolResult, ApplyReply]:
        """Apply an isolated job's units onto a git branch: three-way merges in unit order, computed without
        touching the user's checkout; a unit that conflicts is skipped whole and reported with its files and
        the units it conflicts with; calling it again skips units already applied. Tell the user the branch
        and what was skipped."""
        def call() -> dict[str, Any]:
            result = orch.apply(job_id, units=units, accepted=accepted, onto=onto, squash=squash)
            reply: dict[str, Any] = plain(result)
            for key in ("applied", "already_applied", "unchanged", "unfinished", "not_selected"):
                reply[key] = format_unit_numbers(reply[key])
            reply["summary"] = (f"applied {len(result.applied)} unit(s) onto {result.branch}"
                                + (f"; {len(result.conflicts)} skipped with conflicts" if result.conflicts else ""))
            return {k: v for k, v in reply.items() if v not in (None, "", [])}

        return await respond(call)

    async def clean_job(job_id: JobRef) -> Annotated[CallToolResult, CleanResult]:
        """Remove an isolated job's unit branches and worktrees and its private Claude config (refused while it
        runs); the applied branch stays. Only when the user asks for it."""
        return await respond(lambda: orch.clean(job_id))

    add_tool(server, get_diff, title="Changes and diffs", read_only=True, idempotent=True)
    add_tool(server, review_changes, title="Mark units accepted or rejected", idempotent=True)
    add_tool(server, apply_changes, title="Apply units' changes onto a branch", idempotent=True)
    add_tool(server, clean_job, title="Remove a job's branches and worktrees", destructive=True, idempotent=True)
