"""`abp add JOB`: items added to a job that exists (from a JSONL/JSON file, stdin, or `--item`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from agentic_batch.cli.common import JobArg
from agentic_batch.cli.output import out, print_json
from agentic_batch.cli.spec_options import JSON_OUTPUT_FLAG
from agentic_batch.errors import InvalidSpec
from agentic_batch.sources.kind import RawItem
from agentic_batch.states import JobStatus

ADD_HELP = """Add items to a job that exists: each becomes a unit, keyed and deduplicated as `abp sync` does.

Every item is checked against the job's prompt (and command) first; a bad one is an error naming it
and nothing is added. A RUNNING job's executors pick the new units up at once; a COMPLETED job
becomes PAUSED with them pending, unless `--start` runs it again.

Examples:

    abp add 3 --jsonl new.jsonl
    jq -c '.[]' more.json | abp add tickets --jsonl - --start
    abp add 3 --item '{"id": 71, "title": "Printer on fire"}' --item '{"id": 72, "title": "Help"}'
"""


def _items(jsonl: str | None, json_file: str | None, item: list[str]) -> Iterator[RawItem]:
    """The items in the order given: the JSONL file (or stdin), the JSON file, then each `--item`."""
    from agentic_batch.service.adding import file_items, jsonl_text_items

    if jsonl == "-":
        yield from jsonl_text_items(sys.stdin.read(), "stdin")
    elif jsonl is not None:
        yield from file_items(jsonl, "jsonl")
    if json_file is not None:
        yield from file_items(json_file, "json")
    yield from _inline(item)


def _inline(values: list[str]) -> Iterator[RawItem]:
    import json

    for number, text in enumerate(values, 1):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidSpec(f"--item {number} is not JSON: {exc}", hint="quote it: --item '{\"k\": \"v\"}'") from None
        yield f"--item {number}", value


def register(app: typer.Typer) -> None:
    @app.command("add", help=ADD_HELP)
    def add(job: JobArg,
            jsonl: Annotated[str | None, typer.Option("--jsonl", metavar="FILE|-",
                                                      help="JSON Lines file of items (`-`: stdin).")] = None,
            json_file: Annotated[str | None, typer.Option("--json", metavar="FILE",
                                                          help="JSON file holding an array of items (a bare "
                                                               "--json at the end prints the result as JSON).")] = None,
            item: Annotated[list[str] | None, typer.Option("--item", metavar="JSON",
                                                           help="One item as a JSON object (repeatable).")] = None,
            start: Annotated[bool, typer.Option("--start", help="Run a COMPLETED, PAUSED or FAILED job again "
                                                "at once for the new units.")] = False,
            as_json: Annotated[bool, typer.Option(JSON_OUTPUT_FLAG, hidden=True)] = False) -> None:
        from agentic_batch.cli.common import orchestrator

        if jsonl is None and json_file is None and not item:
            raise InvalidSpec("no items given", hint="use --jsonl FILE (or - for stdin), --json FILE or --item JSON")
        result = orchestrator().add(job, _items(jsonl, json_file, list(item or [])), start=start)
        if as_json:
            print_json(result)
            return
        out.print(f"Job {result.job_id}: added {result.added} unit(s), skipped {result.duplicates} duplicate(s).")
        if result.started:
            out.print(f"Job {result.job_id} is RUNNING again: its executor runs the new units.")
        elif result.next:
            command = {"resume": "abp resume", "retry": "abp retry", "start": "abp start",
                       "approve": "abp start --approve"}[result.next].split(" ", 2)
            said = " ".join([*command[:2], str(result.job_id), *command[2:]])
            out.print(f"Job {result.job_id} is {result.status}: `{said}` runs them.")
        elif result.added and result.status == JobStatus.RUNNING:
            out.print(f"Job {result.job_id} is RUNNING: its executor picks them up now.")
