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
from agentic_batch.cli.output import err, jobs_table, out, print_json, status_panel, unit_report
from agentic_batch.errors import InvalidSpec

LEVEL_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "red"}


def follow_job(job: str | int, live: bool, exit_code: bool, console: Console | None = None) -> int | None:
    """Show live progress until the job ends (Ctrl-C detaches; the job keeps running)."""
    if not live:
        code = wait_for(job, None, as_json=False, console=console)
        return code if exit_code else None
    orch = orchestrator()
    status = orch.status(job)
    try:
        with Live(status_panel(status), console=console or out, refresh_per_second=4, transient=False) as view:
            while status["status"] not in FINAL:
                time.sleep(0.5)
                status = orch.status(job)
                view.update(status_panel(status, orch.active_units(job)))
            view.update(status_panel(status))
    except KeyboardInterrupt:
        err.print(f"detached; job {status['id']} keeps running (`abp watch {status['id']}` to follow again)")
        return 130 if exit_code else None
    return FINAL[status["status"]] if exit_code else None


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(job: Annotated[str | None, typer.Argument(metavar="JOB", help="Job id or name; "
                                                            "omit for all jobs.")] = None,
               as_json: JsonFlag = False) -> None:
        """Progress of one job (counts, rate, ETA, cost, executor), or a table of all jobs."""
        orch = orchestrator()
        if job is None:
            rows = orch.list()
            print_json(rows) if as_json else out.print(jobs_table(rows))
            return
        s = orch.status(job)
        if as_json:
            print_json(s)
            return
        out.print(status_panel(s, orch.active_units(job) if s["running"] else None))
        if s["status"] == "RUNNING" and s["executor"]["state"] != "running":
            err.print(f"[yellow]no executor is running this job[/yellow]: `abp resume {s['id']}`")

    @app.command("list")
    def list_jobs(status: Annotated[str | None, typer.Option("--status", help="Only jobs in these states "
                                                                 "(comma list: running,paused).")] = None,
                  as_json: JsonFlag = False) -> None:
        """All jobs, newest first."""
        rows = orchestrator().list(status=status)
        if as_json:
            print_json(rows)
        elif not rows:
            err.print("no jobs" + (f" with status {status}" if status else "") + "; create one with `abp create`")
        else:
            out.print(jobs_table(rows))

    @app.command("watch")
    def watch(job: JobArg) -> None:
        """Live progress: bar, counts, rate, ETA, cost and what each active agent is doing. Ctrl-C detaches."""
        follow_job(job, live=True, exit_code=False)

    @app.command("results")
    def results(job: JobArg,
                fmt: Annotated[str, typer.Option("--format", "-f", help="json, jsonl or csv.")] = "jsonl",
                output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file "
                                                               "instead of stdout.")] = None,
                status: Annotated[str | None, typer.Option("--status", help="Only units in these states "
                                                              "(comma list: completed,failed).")] = None) -> None:
        """Export results: one row per unit (unit_id, item fields, status, output, error, cost, attempts)."""
        if fmt not in ("json", "jsonl", "csv"):
            raise InvalidSpec(f"unknown format {fmt!r}", hint="use json, jsonl or csv")
        orch = orchestrator()
        if output is not None:
            info = orch.export_to(job, output, fmt, status)
            err.print(f"wrote {info['rows']} row(s) to {info['path']}")
            return
        for chunk in orch.export(job, fmt, status):
            sys.stdout.write(chunk)
        sys.stdout.flush()

    @app.command("show")
    def show(job: JobArg,
             unit: Annotated[str, typer.Argument(metavar="UNIT", help="Unit id or key.")],
             as_json: JsonFlag = False) -> None:
        """One unit: payload, prompt, attempts, conversation (every agent turn) and output."""
        view = orchestrator().unit(job, unit)
        print_json(view) if as_json else unit_report(view, "job " + str(view["job_id"]))

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
                    after = line["id"]
                    if as_json:
                        print_json(line)
                        continue
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line["ts"]))
                    out.print(Text.assemble((stamp + " ", "dim"), (f"{line['level']:<7} ", LEVEL_STYLE[line["level"]]),
                                            Text(line["message"])))
                if not follow:
                    if len(lines) == limit:
                        continue
                    return
                if not lines:
                    if orch.status(job)["status"] in FINAL:
                        return
                    time.sleep(0.5)
        except KeyboardInterrupt:
            return
