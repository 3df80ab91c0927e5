"""Shared bits of the CLI commands: the orchestrator, the job argument, small helpers."""

from __future__ import annotations

from typing import Annotated

import typer

from agentic_batch.service import Orchestrator

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id, its name when unique, or `last`.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_orchestrator: Orchestrator | None = None


def orchestrator() -> Orchestrator:
    global _orchestrator
    if _orchestrator is None:
        _orchestrator = Orchestrator()
    return _orchestrator
