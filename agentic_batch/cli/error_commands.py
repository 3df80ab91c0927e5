"""`abp errors JOB`: a job's failed units grouped by cause (`abp retry JOB --error N` retries one group)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agentic_batch.cli.common import JobArg, JsonFlag, orchestrator
from agentic_batch.cli.output import out, print_json, safe
from agentic_batch.service.models import ErrorSummary


def errors_table(summary: ErrorSummary) -> Table:
    table = Table(title=f"job {summary.job_id}: {summary.failed} failed unit(s) in {len(summary.groups)} group(s)",
                  title_justify="left")
    for name, justify in (("#", "right"), ("count", "right"), ("class", "left"), ("signature", "left"),
                          ("units", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for group in summary.groups:
        kind = (group.error_class or "-") + (f"/{group.error_kind}" if group.error_kind else "")
        shown = ", ".join(str(u.number) for u in group.units) + (", …" if group.count > len(group.units) else "")
        table.add_row(str(group.group), str(group.count), safe(kind), safe(group.signature or "(no message)"),
                      shown)
    return table


def register(app: typer.Typer) -> None:
    @app.command("errors")
    def errors(job: JobArg,
               examples: Annotated[int, typer.Option("--examples", help="Example units per group (0-20).")] = 3,
               limit: Annotated[int, typer.Option("--limit", help="Groups to show, largest first (1-200).")] = 50,
               as_json: JsonFlag = False) -> None:
        """Failed units grouped by cause: count, error class, signature (numbers, paths, ids, quoted values
        masked) and example units. Retry one group with `abp retry JOB --error N`."""
        summary = orchestrator().error_summary(job, examples=examples, limit=limit)
        if as_json:
            print_json(summary)
        elif not summary.groups:
            out.print(f"job {summary.job_id} has no failed units")
        else:
            out.print(errors_table(summary))
            out.print(f"retry one group: abp retry {summary.job_id} --error N;  "
                      f"see a unit: abp show {summary.job_id} UNIT")
