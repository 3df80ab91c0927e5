"""`abp stop|resume|cancel|retry|wait|executor`: steering a job that runs in its detached executor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from agentic_batch.cli.common import JobArg, JsonFlag, orchestrator
from agentic_batch.cli.output import err, markup_safe, money, out, plan_line, print_json, shows_usage
from agentic_batch.errors import InvalidSpec
from agentic_batch.engine.procs import hostname
from agentic_batch.service.models import JobView, ResumeAllReport
from agentic_batch.states import JobStatus

FINAL = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.CANCELLED: 1, JobStatus.PAUSED: 1}


def _report(status: JobView, as_json: bool, message: str) -> None:
    if as_json:
        print_json(status)
    else:
        out.print(message)


def register(app: typer.Typer) -> None:
    @app.command("stop")
    def stop(job: JobArg,
             no_wait: Annotated[bool, typer.Option("--no-wait", help="Return at once instead of waiting for "
                                                   "PAUSED.")] = False,
             as_json: JsonFlag = False) -> None:
        """Pause a running job: in-flight units finish (within a grace period), the rest stay PENDING."""
        orch = orchestrator()
        status = orch.stop(job)
        if not no_wait and status.status == JobStatus.RUNNING:
            deadline = time.monotonic() + orch.settings.stop_grace_seconds + 15
            with err.status(f"stopping job {status.id} (in-flight units may finish first)…"):
                while status.status == JobStatus.RUNNING and time.monotonic() < deadline:
                    time.sleep(0.3)
                    status = orch.status(status.id)
        _report(status, as_json, f"Job {status.id} is {status.status}"
                + (f"; resume with `abp resume {status.id}`" if status.status == JobStatus.PAUSED else ""))

    @app.command("resume")
    def resume(job: Annotated[str | None, typer.Argument(metavar="JOB", help="Job id, its name when unique, or "
                                                          "`last`.", show_default=False)] = None,
               all_jobs: Annotated[bool, typer.Option("--all", help="Every RUNNING job whose executor is gone "
                                                      "(after a reboot): run it at boot.")] = False,
               budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="A new budget for "
                                                                   "the job (after a budget pause).")] = None,
               executors: Annotated[int, typer.Option("--executors", help="Executor processes on this host; "
                                                      "several help CPU-bound jobs.")] = 1,
               as_json: JsonFlag = False) -> None:
        """Continue a PAUSED job (or a RUNNING one whose executor died): lost units are reclaimed at once."""
        if all_jobs:
            if job is not None:
                raise InvalidSpec("give JOB or --all, not both")
            if budget_usd is not None or executors != 1:
                raise InvalidSpec("--budget-usd and --executors apply to one JOB, not to --all")
            _report_resume_all(orchestrator().resume_all(), as_json)
            return
        if job is None:
            raise InvalidSpec("give a JOB to resume, or --all for every RUNNING job whose executor is gone")
        status = orchestrator().resume(job, budget_usd=budget_usd, executors=executors)
        if status.cache and status.plan.cached and not as_json:
            out.print(plan_line(status.plan))
        ex = status.executor
        _report(status, as_json, f"Job {status.id} resumed: executor pid {ex.pid}; "
                                 f"{status.pending + status.running} unit(s) to go.")

    @app.command("cancel")
    def cancel(job: JobArg, as_json: JsonFlag = False) -> None:
        """Cancel a job: running agents are killed, pending units are marked CANCELLED."""
        status = orchestrator().cancel(job)
        _report(status, as_json, f"Job {status.id} cancelled ({status.completed} unit(s) had completed).")

    @app.command("retry")
    def retry(job: JobArg,
              failed: Annotated[bool, typer.Option("--failed", help="Retry FAILED units (the default).")] = True,
              cancelled: Annotated[bool, typer.Option("--cancelled", help="Also retry CANCELLED units.")] = False,
              error: Annotated[int | None, typer.Option("--error", metavar="N", help="Only the failed units of "
                                                        "error group N (see `abp errors JOB`).",
                                                        show_default=False)] = None,
              as_json: JsonFlag = False) -> None:
        """Queue failed units again with fresh retries and start the executor."""
        if not failed and not cancelled:
            raise InvalidSpec("nothing to retry: give --failed and/or --cancelled")
        status = orchestrator().retry(job, include_cancelled=cancelled, error_group=error)
        if status.cache and not as_json:
            out.print(plan_line(status.plan))
        which = f" (error group {error})" if error is not None else ""
        _report(status, as_json, f"Job {status.id} is RUNNING again: {status.retried} unit(s){which} queued for retry.")

    @app.command("wait")
    def wait(job: JobArg,
             timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many "
                                                              "seconds (exit 2).")] = None,
             as_json: JsonFlag = False) -> None:
        """Block until the job ends. Exit 0 if COMPLETED, 1 if FAILED, CANCELLED or PAUSED, 2 on timeout."""
        if timeout is not None and timeout < 0:
            raise InvalidSpec("--timeout must be >= 0")
        raise typer.Exit(wait_for(job, timeout, as_json))

    @app.command("executor")
    def executor(job: JobArg,
                 join: Annotated[bool, typer.Option("--join", help="Join a RUNNING job as one more executor "
                                                    "(other hosts need a PostgreSQL store).")] = False) -> None:
        """Run an executor for the job in the foreground (`abp start` runs one detached; `--join` adds one,
        e.g. on another host)."""
        from agentic_batch.engine.executor import Executor

        orch = orchestrator()
        target = orch.job(job)
        raise typer.Exit(Executor(target.id, store=orch.store, settings=orch.settings, join=join).run())


def _report_resume_all(report: ResumeAllReport, as_json: bool) -> None:
    """One line per RUNNING job (what happened to it) and a total; exit 1 if any was skipped."""
    if as_json:
        print_json(report)
    else:
        for row in report.jobs:
            where = f"pid {row.pid}" + (f" on {row.host}" if row.host and row.host != hostname() else "")
            said = {"resumed": f"resumed (executor {where})", "running": f"still running (executor {where})",
                    "skipped": f"skipped: {row.reason}"}[row.outcome]
            out.print(f"job {row.job_id} {markup_safe(row.name)}: {markup_safe(said)}")
        out.print(f"{report.resumed} resumed, {report.running} still running, {report.skipped} skipped"
                  if report.jobs else "no RUNNING jobs")
    if report.skipped:
        raise typer.Exit(1)


def wait_for(job: str | int, timeout: float | None, as_json: bool, quiet: bool = False,
             console: Console | None = None, tick: Callable[[JobView], None] | None = None) -> int:
    """Poll until a final state. A RUNNING job whose executor is gone for a few seconds counts as stuck.

    `tick(status)` (if given) sees every status polled before the final one (progress lines)."""
    orch = orchestrator()
    deadline = None if timeout is None else time.monotonic() + timeout
    gone_since: float | None = None
    while True:
        status = orch.status(job)
        state = status.status
        if state in FINAL:
            break
        if tick is not None:
            tick(status)
        if state == JobStatus.RUNNING and status.executor.state != "running":
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > 5:
                err.print(f"[yellow]job {status.id} is RUNNING but no executor is alive[/yellow] "
                          f"(resume it with `abp resume {status.id}`)")
                if as_json:
                    print_json(status)
                return 1
        else:
            gone_since = None
        if deadline is not None and time.monotonic() >= deadline:
            if as_json:
                print_json(status)
            elif not quiet:
                err.print(f"timed out: job {status.id} is {state} ({status.done}/{status.total} done)")
            return 2
        time.sleep(0.5)
    if as_json:
        print_json(status)
    elif not quiet:
        cost = (f", cost {money(status.cost_usd)}"
                if shows_usage(status.worker, status.cost_usd, status.tokens_in) else "")
        (console or out).print(f"Job {status.id} {state}: {status.completed} completed, "
                               f"{status.failed} failed, {status.cancelled} cancelled{cost}")
    return FINAL[state]
