"""`abp status|list|watch|results|show|logs`: reading jobs, units and logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from agentic_batch.cli.common import JobArg, JsonFlag, orchestrator
from agentic_batch.cli.control_commands import FINAL, wait_for
from agentic_batch.cli.output import (
    err,
    jobs_table,
    out,
    print_json,
    progress_line,
    safe,
    status_panel,
    unit_report,
)
from agentic_batch.errors import InvalidSpec
from agentic_batch.service.models import JobView
from agentic_batch.states import JobStatus

LEVEL_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "red"}


#: Seconds between progress lines when the output is not a terminal (`abp watch --interval`).
PROGRESS_INTERVAL_S = 5.0


def follow_job(job: str | int, live: bool, exit_code: bool, console: Console | None = None,
               interval: float = PROGRESS_INTERVAL_S) -> int | None:
    """Show progress until the job ends (Ctrl-C detaches; the job keeps running).

    On a terminal (and `live`): a Rich live panel. Off a terminal a live panel prints nothing until
    the end, so a log or a CI job sees one progress line every `interval` seconds and a final one.
    """
    console = console or out
    orch = orchestrator()
    status = orch.status(job)
    try:
        if live and console.is_terminal:
            with Live(status_panel(status), console=console, refresh_per_second=4, transient=False) as view:
                while status.status not in FINAL:
                    time.sleep(0.5)
                    status = orch.status(job)
                    view.update(status_panel(status, orch.active_units(job)))
                view.update(status_panel(status))
        else:
            code = 0
            if status.status not in FINAL:
                console.print(progress_line(status), soft_wrap=True)
                code = wait_for(job, None, as_json=False, quiet=True, tick=_Ticker(console, interval))
                status = orch.status(job)
            console.print(progress_line(status), soft_wrap=True)
            if status.status not in FINAL:  # no executor left: wait_for said so and how to resume
                return code if exit_code else None
    except KeyboardInterrupt:
        err.print(f"detached; job {status.id} keeps running (`abp watch {status.id}` to follow again)")
        return 130 if exit_code else None
    return FINAL[status.status] if exit_code else None


class _Ticker:
    """A progress line when `interval` seconds have passed since the last one."""

    def __init__(self, console: Console, interval: float) -> None:
        self.console, self.interval, self.last = console, interval, time.monotonic()

    def __call__(self, status: JobView) -> None:
        if time.monotonic() - self.last >= self.interval:
            self.console.print(progress_line(status), soft_wrap=True)
            self.last = time.monotonic()


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(job: Annotated[str | None, typer.Argument(metavar="JOB", help="Job id or name; "
                                                            "omit for all jobs.")] = None,
               as_json: JsonFlag = False) -> None:
        """Progress of one job (counts, rate, ETA, cost, executor), or a table of all jobs."""
        orch = orchestrator()
        if job is None:
            rows = orch.list_jobs()
            print_json(rows) if as_json else out.print(jobs_table(rows))
            return
        s = orch.status(job)
        if as_json:
            print_json(s)
            return
        out.print(status_panel(s, orch.active_units(job) if s.running else None))
        if s.status == JobStatus.RUNNING and s.executor.state != "running":
            err.print(f"[yellow]no executor is running this job[/yellow]: `abp resume {s.id}`")

    @app.command("list")
    def list_jobs(status: Annotated[str | None, typer.Option("--status", help="Only jobs in these states "
                                                                 "(comma list: running,paused).")] = None,
                  as_json: JsonFlag = False) -> None:
        """All jobs, newest first."""
        rows = orchestrator().list_jobs(status=status)
        if as_json:
            print_json(rows)
        elif not rows:
            err.print("no jobs" + (f" with status {status}" if status else "") + "; create one with `abp create`")
        else:
            out.print(jobs_table(rows))

    @app.command("watch")
    def watch(job: JobArg,
              interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between progress "
                                                      "lines when the output is not a terminal.")]
              = PROGRESS_INTERVAL_S) -> None:
        """Live progress: bar, counts, rate, ETA, cost and what each active agent is doing. Ctrl-C detaches.
        Off a terminal (a pipe, a log): one progress line every few seconds and a final one."""
        follow_job(job, live=True, exit_code=False, interval=interval)

    @app.command("results")
    def results(job: JobArg,
                fmt: Annotated[str, typer.Option("--format", "-f", help="json, jsonl or csv.")] = "jsonl",
                output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file "
                                                               "instead of stdout.")] = None,
                status: Annotated[str | None, typer.Option("--status", help="Only units in these states "
                                                              "(comma list: completed,failed).")] = None) -> None:
        """Export results: one row per unit (unit number, key, item fields, status, output, error, cost, attempts)."""
        if fmt not in ("json", "jsonl", "csv"):
            raise InvalidSpec(f"unknown format {fmt!r}", hint="use json, jsonl or csv")
        orch = orchestrator()
        if output is not None:
            info = orch.export_to(job, output, fmt, status)
            err.print(f"wrote {info.rows} row(s) to {info.path}")
            return
        for chunk in orch.export(job, fmt, status):
            sys.stdout.write(chunk)
        sys.stdout.flush()

    @app.command("show")
    def show(job: JobArg,
             unit: Annotated[str, typer.Argument(metavar="UNIT", help="The unit's number in the job (1, 2, ...), "
                                                 "or key:KEY.")],
             as_json: JsonFlag = False) -> None:
        """One unit: payload, prompt, attempts, conversation (every agent turn) and output."""
        orch = orchestrator()
        view = orch.unit(job, unit)
        if as_json:
            print_json(view)
        else:
            unit_report(view, "job " + str(view.job_id), worker=orch.job(view.job_id).worker)

    @app.command("logs")
    def logs(job: JobArg,
             level: Annotated[str, typer.Option("--level", help="Minimum level: debug, info, warning, "
                                                "error.")] = "info",
             follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the "
                                                  "job ends (Ctrl-C to stop).")] = False,
             limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Lines per read.")] = 1000,
             as_json: JsonFlag = False) -> None:
        """The job's log: executor starts and stops, retries, failures, reclaimed units."""
        orch = orchestrator()
        level = level.lower()
        after = 0
        try:
            while True:
                lines = orch.logs(job, level=level, after=after, limit=limit)
                for line in lines:
                    after = line.id
                    if as_json:
                        print_json(line)
                        continue
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.ts))
                    out.print(Text.assemble((stamp + " ", "dim"), (f"{line.level:<7} ", LEVEL_STYLE[line.level]),
                                            safe(line.message, multiline=True)))
                if not follow:
                    if len(lines) == limit:
                        continue
                    return
                if not lines:
                    if orch.status(job).status in FINAL:
                        return
                    time.sleep(0.5)
        except KeyboardInterrupt:
            return
