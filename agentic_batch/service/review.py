"""Review, apply and clean an isolated job's changes (a mixin of `Orchestrator`, for every interface).

A unit of a `--isolate worktree` job leaves a commit on its own branch and its stats and patch in
the store. Review reads those (the changes list is one light query, a unit's patch is read alone) and
marks units accepted or rejected; apply merges the chosen units' commits onto a branch
(`isolation.apply`: in the object database, never in the user's checkout, a conflicting unit
skipped whole); clean removes the job's branches, worktrees and private Claude config.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentic_batch.errors import AbpError, IllegalState, InvalidSpec, field_ref
from agentic_batch.refs import format_unit_numbers as _ranges
from agentic_batch.refs import parse_unit_numbers
from agentic_batch.service.review_models import (ApplyConflict, ApplyResult, CleanResult, FileChangeView,
                                                 JobChanges, Review, ReviewMarks, UnitChanges, UnitDiff,
                                                 VerifyState)
from agentic_batch.states import JobStatus, UnitStatus

if TYPE_CHECKING:
    from agentic_batch.config import Settings
    from agentic_batch.isolation import JobWorktrees
    from agentic_batch.store import JobRecord, Store, UnitRecord

REVIEWS: tuple[Review, ...] = ("accepted", "rejected")


class GitFailed(AbpError):
    """A git command on the job's repository failed (moved, deleted, locked): git's own words."""

    http_status = 409


@contextmanager
def git_errors(repo: str) -> Iterator[None]:
    from agentic_batch.isolation import GitError

    try:
        yield
    except GitError as exc:
        raise GitFailed(f"git failed in {repo}: {exc}") from None
    except FileNotFoundError:
        raise GitFailed(f"the job's repository {repo} is gone") from None


def job_worktrees(settings: Settings, job: JobRecord) -> JobWorktrees:
    """The isolated job's worktrees: under its directory, with the per-repository lock under ABP_HOME."""
    from agentic_batch.isolation import JobWorktrees

    return JobWorktrees(repo=Path(job.repo or "."), base=job.base_commit or "", job_id=job.id,
                        job_dir=settings.job_dir(job.id), lock_dir=lock_dir(settings))


def lock_dir(settings: Settings) -> Path:
    return settings.home / "locks"


def current_review(row: dict[str, Any]) -> Review | None:
    """The unit's mark, if it was given to the commit the unit has now."""
    commit = (row.get("changes") or {}).get("commit")
    if not commit or row.get("reviewed_commit") != commit:
        return None
    return next((r for r in REVIEWS if r == row.get("review")), None)


def verify_state(job: JobRecord, row: dict[str, Any]) -> VerifyState | None:
    if not job.verify:
        return None
    if row["status"] == UnitStatus.COMPLETED:
        return "passed"
    return "failed" if row.get("verified") or row.get("verify_output") else None


def change_row(job: JobRecord, row: dict[str, Any]) -> UnitChanges:
    stats = row.get("changes") or {}
    return UnitChanges(number=row["number"], key=row["key"], status=row["status"], branch=stats.get("branch"),
                       commit=stats.get("commit"), files=int(stats.get("files") or 0),
                       added=int(stats.get("added") or 0), deleted=int(stats.get("deleted") or 0),
                       verify=verify_state(job, row), review=current_review(row))


class ReviewMixin:
    """Needs `store`, `settings`, `job()` and `_unit_record()` from `Orchestrator`."""

    store: Store
    settings: Settings

    if TYPE_CHECKING:
        def job(self, ref: str | int) -> JobRecord: ...
        def _unit_record(self, job: JobRecord, unit_ref: str | int) -> UnitRecord: ...

    def _isolated_job(self, ref: str | int, what: str) -> JobRecord:
        job = self.job(ref)
        if not job.isolated or not job.repo or not job.base_commit:
            raise IllegalState(f"job {job.id} has no changes to {what}: it was created without "
                               f"{field_ref('isolate')} worktree", hint="only isolated jobs record their changes")
        return job

    # -- review ---------------------------------------------------------------------------------

    def changes(self, ref: str | int) -> JobChanges:
        """Every unit of an isolated job with its change stats, verify state and review mark."""
        job = self._isolated_job(ref, "list")
        rows = [change_row(job, r) for r in self.store.review.change_rows(job.id)]
        return JobChanges(job_id=job.id, repo=job.repo or "", base_commit=job.base_commit or "", units=rows,
                          changed=sum(1 for r in rows if r.commit), files=sum(r.files for r in rows),
                          added=sum(r.added for r in rows), deleted=sum(r.deleted for r in rows))

    def diff(self, ref: str | int, unit_ref: str | int) -> UnitDiff:
        """One unit's changes: its files and its patch against the job's base."""
        job = self._isolated_job(ref, "diff")
        unit = self._unit_record(job, unit_ref)
        row = {"number": unit.number, "key": unit.key, "status": unit.status, "changes": unit.changes,
               "review": unit.review, "reviewed_commit": unit.reviewed_commit, "verify_output": unit.verify_output}
        line = change_row(job, row)
        stats = unit.changes or {}
        patch = unit.patch
        if patch is None and line.commit:  # a unit whose patch was not stored: its branch has it
            from agentic_batch.isolation.git import git

            with git_errors(job.repo or ""):
                patch = git(job.repo or ".", "diff", "--binary", "--find-renames", "--no-color", "--no-ext-diff",
                            job.base_commit or "", line.commit).stdout
        files = [FileChangeView(path=f["path"], old_path=f.get("old_path"), added=f.get("added"),
                                deleted=f.get("deleted")) for f in stats.get("changes") or []]
        return UnitDiff(**line.model_dump(), job_id=job.id, base_commit=job.base_commit or "", changes=files,
                        patch=patch or "", verify_output=unit.verify_output)

    def review(self, ref: str | int, units: str | Sequence[int | str], mark: str | None) -> ReviewMarks:
        """Mark units `accepted` or `rejected` (None: unmark); the mark holds for the commit they have now."""
        job = self._isolated_job(ref, "review")
        review = next((r for r in REVIEWS if r == mark), None)
        if mark is not None and review is None:
            raise InvalidSpec(f"{field_ref('review')} must be accepted, rejected or null, not {mark!r}")
        rows = {r["number"]: r for r in self.store.review.change_rows(job.id)}
        numbers = self._selection(job, units, rows)
        bare = [n for n in numbers if not (rows[n].get("changes") or {}).get("commit")]
        if bare:
            raise IllegalState(f"{_units_said(bare)} of job {job.id} {'has' if len(bare) == 1 else 'have'} no "
                               f"changes to review", hint="a unit is reviewed once its attempt changed something")
        self.store.review.set_review(job.id, {n: rows[n]["changes"]["commit"] for n in numbers}, review)
        return ReviewMarks(job_id=job.id, review=review, units=numbers)

    def _selection(self, job: JobRecord, units: str | Sequence[int | str], rows: dict[int, Any]) -> list[int]:
        """Unit numbers from `3,7-12` (or a list of numbers); every one must be a unit of the job."""
        text = units if isinstance(units, str) else ",".join(str(u) for u in units)
        numbers = parse_unit_numbers(text)
        if not numbers:
            raise InvalidSpec(f"{field_ref('units')}: {text!r} is not a list of unit numbers",
                              hint="e.g. 3,7-12")
        unknown = [n for n in numbers if n not in rows]
        if unknown:
            last = max(rows) if rows else 0
            raise InvalidSpec(f"{field_ref('units')}: job {job.id} has no unit {_ranges(unknown)}",
                              hint=f"its units are 1-{last}" if last else "it has no units")
        return numbers

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, ref: str | int, units: str | Sequence[int | str] | None = None, accepted: bool = False,
              onto: str | None = None, squash: bool = False) -> ApplyResult:
        """Merge the chosen units' commits onto `onto` (default: a new branch abp/<job>/applied from the
        base), in unit order; conflicting units are skipped whole and reported; a re-run skips what is
        already there. Nothing is created when the input is wrong."""
        from agentic_batch.isolation.apply import UnitCommit, apply_units, missing_commits

        job = self._isolated_job(ref, "apply")
        if units is not None and accepted:
            raise InvalidSpec(f"give either {field_ref('units')} or {field_ref('accepted')}, not both")
        rows = {r["number"]: r for r in self.store.review.change_rows(job.id)}
        if units is not None:
            selected = self._selection(job, units, rows)
        elif accepted:
            selected = [n for n, r in rows.items() if current_review(r) == "accepted"]
            if not selected:
                raise IllegalState(f"job {job.id} has no accepted units", hint=f"mark some: `abp review {job.id} "
                                                                               "UNITS --accept`")
        else:
            selected = sorted(rows)
        chosen, unchanged, unfinished = [], [], []
        for number in selected:
            row = rows[number]
            commit = (row.get("changes") or {}).get("commit")
            if row["status"] != UnitStatus.COMPLETED or row.get("changes") is None:
                unfinished.append(number)
            elif not commit:
                unchanged.append(number)
            else:
                chosen.append(UnitCommit(number=number, key=row["key"], commit=commit))
        repo = Path(job.repo or "")
        with git_errors(job.repo or ""):
            gone = missing_commits(repo, [u.commit for u in chosen])
            if gone:
                lost = [u.number for u in chosen if u.commit in gone]
                raise IllegalState(f"the commits of {_units_said(lost)} are gone from {repo}",
                                   hint="`abp clean` removed their branches; run those units again")
            outcome = apply_units(repo=repo, base=job.base_commit or "", job_id=job.id, units=chosen, onto=onto,
                                  squash=squash, lock_dir=lock_dir(self.settings))
        picked = set(selected)
        self.store.logs.append_logs([{"job_id": job.id, "level": "info", "message": (
            f"applied {len(outcome.applied)} unit(s) onto {outcome.branch}"
            + (f"; {len(outcome.conflicts)} skipped with conflicts" if outcome.conflicts else ""))}])
        return ApplyResult(
            job_id=job.id, branch=outcome.branch, created=outcome.created, head=outcome.head, squash=squash,
            applied=outcome.applied, already_applied=outcome.already_applied,
            conflicts=[ApplyConflict(number=c.number, files=c.files, with_units=c.with_units,
                                     with_target=c.with_target) for c in outcome.conflicts],
            unchanged=unchanged, unfinished=unfinished, not_selected=[n for n in sorted(rows) if n not in picked],
            commits=outcome.commits, worktree=str(outcome.worktree) if outcome.worktree else None)

    # -- clean ----------------------------------------------------------------------------------

    def clean(self, ref: str | int) -> CleanResult:
        """Remove the job's unit branches and worktrees and its private Claude config; refused while it runs.
        The applied branch (the user's result) stays."""
        job = self.job(ref)
        if job.status in (JobStatus.RUNNING, JobStatus.TESTING):
            raise IllegalState(f"cannot clean job {job.id}: it is {job.status}",
                               hint=f"stop it first (`abp stop {job.id}`)" if job.status == JobStatus.RUNNING
                               else f"approve or reject its test first (`abp start {job.id} --reject`)")
        removed: list[str] = []
        kept: list[str] = []
        worktrees = False
        if job.isolated and job.repo and Path(job.repo).is_dir():
            from agentic_batch.isolation.cleanup import delete_job_branches

            with git_errors(job.repo):
                tree_root = job_worktrees(self.settings, job)
                worktrees = tree_root.root.is_dir()
                tree_root.remove_all()
                branches = delete_job_branches(Path(job.repo), job.id, lock_dir(self.settings))
            removed, kept = branches.removed, branches.kept
        claude = self.settings.job_dir(job.id) / "claude"
        had_claude = claude.is_dir()
        if had_claude:
            shutil.rmtree(claude, ignore_errors=True)
        self.store.logs.append_logs([{"job_id": job.id, "level": "info", "message": (
            f"cleaned: {len(removed)} branch(es) removed" + (f", kept {', '.join(kept)}" if kept else ""))}])
        return CleanResult(job_id=job.id, branches_removed=len(removed), worktrees_removed=worktrees,
                           claude_dir_removed=had_claude, kept=kept)


def _units_said(numbers: Sequence[int]) -> str:
    return f"unit{'s' if len(numbers) > 1 else ''} {_ranges(numbers)}"
