"""`abp delete JOB...` and `abp prune`: removing jobs with everything they made."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from agentic_batch.cli.common import JsonFlag, orchestrator
from agentic_batch.cli.output import err, out, print_json, safe
from agentic_batch.service.clearing_models import DeletedJob


def _line(job: DeletedJob) -> str:
    what = f"job {job.job_id} “{job.name}” ({job.status}, {job.units} unit(s))"
    if not job.deleted:
        ended = f", ended {time.strftime('%Y-%m-%d %H:%M', time.localtime(job.finished_at))}" if job.finished_at else ""
        return f"would delete {what}{ended}"
    extra = ["cancelled first"] if job.cancelled else []
    if job.branches_removed:
        extra.append(f"{job.branches_removed} branch(es) removed")
    if job.kept:
        extra.append(f"kept {', '.join(job.kept)}")
    return f"deleted {what}" + (f": {'; '.join(extra)}" if extra else "")


def _report(jobs: list[DeletedJob]) -> None:
    for job in jobs:
        out.print(safe(_line(job)))
        for warning in job.warnings:
            err.print(safe(f"warning: job {job.job_id}: {warning}", style="yellow"))


def register(app: typer.Typer) -> None:
    @app.command("delete")
    def delete(jobs: Annotated[list[str], typer.Argument(metavar="JOB...", help="Job ids or names (or `last`).")],
               force: Annotated[bool, typer.Option("--force", help="Cancel a RUNNING job first (waits for its "
                                                   "executors to stop), then delete it.")] = False,
               as_json: JsonFlag = False) -> None:
        """Delete jobs for good: units, results, events, logs, their files under ABP_HOME and an isolated
        job's worktrees and unit branches (its applied branch stays). A RUNNING job needs `--force`."""
        result = orchestrator().delete(jobs, force=force)
        if as_json:
            print_json(result)
        else:
            _report(result.jobs)

    @app.command("prune")
    def prune(status: Annotated[str | None, typer.Option("--status", help="Comma list of completed, cancelled, "
                                                         "failed (default: all three).")] = None,
              older_than: Annotated[str | None, typer.Option("--older-than", metavar="AGE",
                                                             help="Only jobs that ended longer ago than this: "
                                                                  "90s, 30m, 12h, 7d, 2w.")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs; delete nothing.")] = False,
              as_json: JsonFlag = False) -> None:
        """Delete every finished job (or those of a status, or older than an age), as `abp delete` does."""
        result = orchestrator().prune(status, older_than, dry_run=dry_run)
        if as_json:
            print_json(result)
            return
        _report(result.jobs)
        if not result.jobs:
            out.print("no job to prune")
        elif dry_run:
            out.print(f"{len(result.jobs)} job(s) would be deleted; run again without --dry-run to delete them")
