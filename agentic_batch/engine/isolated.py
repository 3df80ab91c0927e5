"""An attempt of an isolated job (`--isolate worktree`): the engine's side of agentic_batch.isolation.

Before the worker runs, the attempt gets a fresh worktree of the job's base and the item is seen
from inside it: every path of the payload that lies in the repository (`path`, a CSV's path column),
the agent's cwd, its allowed directory and the job's working directory are mapped into the worktree,
for every worker kind alike, because the worker only ever sees the context. After the worker, what
it changed is committed on the unit's branch (before the verifier runs, so nothing the verifier
writes is part of the change), the verifier gates the attempt, and the worktree goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from agentic_batch.config import Settings
from agentic_batch.isolation import Changes, JobWorktrees, UnitWorktree
from agentic_batch.isolation.verify import VERIFY_FAILED, run_verify
from agentic_batch.store import JobRecord
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome

log = logging.getLogger(__name__)

#: The owner directory of attempts run without an executor id (a bare UnitRunner in tests).
NO_OWNER = "local"


def job_worktrees(job: JobRecord, settings: Settings) -> JobWorktrees:
    if not job.repo or not job.base_commit:
        raise RuntimeError(f"job {job.id} is isolated but has no repository or base commit recorded")
    return JobWorktrees(repo=Path(job.repo), base=job.base_commit, job_id=job.id, job_dir=settings.job_dir(job.id),
                        lock_dir=settings.home / "locks")


def feedback_section(feedback: str) -> str:
    """What the next attempt's prompt gets when the verifier refused the last one."""
    return ("\n\nA previous attempt at this task was discarded (you start again from the original files) because "
            "the verification command failed. Its output ends with:\n```\n" + feedback + "\n```\n"
            "Make the change so that the verification passes.")


class IsolatedAttempt:
    """One attempt's worktree: `open()`, `context()` for the worker, `finish()` after it, `close()`."""

    def __init__(self, worktrees: JobWorktrees, job: JobRecord, owner: str | None, number: int, key: str) -> None:
        self.worktrees = worktrees
        self.job = job
        self.owner = owner or NO_OWNER
        self.number = number
        self.key = key
        self.unit: UnitWorktree | None = None

    async def open(self) -> UnitWorktree:
        self.unit = await asyncio.to_thread(self.worktrees.open, self.owner, self.number, self.key)
        return self.unit

    def map_path(self, path: Path) -> Path | None:
        """A path of the user's checkout inside this attempt's worktree; a relative one is taken from
        the job's working directory in the worktree. None when outside the repository."""
        assert self.unit is not None
        if not path.is_absolute():
            return self.workdir() / path
        return self.worktrees.map_path(self.unit, path)

    def _map(self, path: Path) -> Path | None:
        assert self.unit is not None
        return self.worktrees.map_path(self.unit, path)

    def payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The item with every absolute path inside the repository pointed into the worktree."""
        mapped = dict(payload)
        for name, value in payload.items():
            if isinstance(value, str) and os.path.isabs(value):
                inside = self._map(Path(value))
                if inside is not None:
                    mapped[name] = str(inside)
        return mapped

    def workdir(self) -> Path:
        """The job's working directory inside the worktree (its root when the workdir is outside)."""
        assert self.unit is not None
        return self._map(Path(self.job.workdir)) or self.unit.path

    def workspace(self, item_dir: Path | None) -> Path:
        """The agent's cwd inside the worktree: the item's directory (from the mapped payload, so
        already in the worktree) when it has one inside the repository, else the mapped workdir."""
        assert self.unit is not None
        if item_dir is None:
            return self.workdir()
        if item_dir.is_relative_to(self.unit.path):
            return item_dir
        return self._map(item_dir) or self.workdir()

    def context(self, ctx: UnitContext) -> UnitContext:
        """The worker's context seen from the worktree (the payload is mapped by the caller, before
        the prompt is rendered, so the prompt names the worktree's files)."""
        assert self.unit is not None
        return dataclasses.replace(ctx, allowed_dirs=[self.unit.path], workdir=self.workdir(), path_map=self.map_path)

    async def finish(self, outcome: UnitOutcome, ctx: UnitContext) -> UnitOutcome:
        """Commit what the worker changed, enforce --require-changes, run --verify; the outcome carries
        the changes, the patch and the verifier's output."""
        assert self.unit is not None
        if not outcome.ok:
            return outcome
        message = f"abp job {self.job.id} unit {self.number}: {self.key}"[:200]
        changes: Changes = await asyncio.to_thread(self.worktrees.capture, self.unit, message)
        outcome.changes = changes.stats()
        outcome.patch = _bounded_patch(changes, self.job.max_output_bytes)
        ctx.emit("changes", {k: v for k, v in outcome.changes.items() if k != "changes"})
        if not changes.changed and self.job.require_changes:
            return dataclasses.replace(outcome, error="the agent changed no file (--require-changes)",
                                       error_class=ErrorClass.retryable, error_kind=FailureKind.no_changes)
        if self.job.verify:
            passed, output = await run_verify(self.job.verify, ctx)
            outcome.verify_output = output
            ctx.emit("verify_result", {"passed": passed, "output": output})
            if not passed:
                return dataclasses.replace(outcome, error=f"{VERIFY_FAILED}:\n{output}",
                                           error_class=ErrorClass.retryable, error_kind=FailureKind.verify_failed)
        return outcome

    def close_now(self) -> None:
        """Remove the worktree (or keep it with --keep-worktrees); synchronous, for cancellation too.
        A failure is logged, never raised: the next attempt or `abp resume` removes what is left."""
        if self.unit is None:
            return
        try:
            self.worktrees.close(self.unit, keep=bool(self.job.keep_worktrees))
        except Exception as exc:
            log.warning("job %s unit %s: could not remove worktree %s: %s", self.job.id, self.number,
                        self.unit.path, exc)
        self.unit = None

    async def close(self) -> None:
        await asyncio.to_thread(self.close_now)


def _bounded_patch(changes: Changes, cap: int | None) -> str | None:
    """The patch as stored: whole up to the job's output cap, else its head and a note (the branch
    has it all)."""
    if not changes.changed:
        return None
    if cap is None or len(changes.patch) <= cap:
        return changes.patch
    return (changes.patch[:cap] + f"\n… patch cut at {cap} characters of {len(changes.patch)}; the whole change is "
            f"commit {changes.commit} on branch {changes.branch}\n")



def prune_dead_worktrees(settings: Settings, job: JobRecord, live: set[str]) -> list[Path]:
    """Remove the worktrees that executors (and test runs) of this job left when they died (`live`:
    the ids of its live executors): run as an executor starts, so `abp resume` after a kill -9 leaves
    no stray worktree."""
    return job_worktrees(job, settings).prune_dead_owners(live.__contains__)
