"""`abp list`, `abp status [JOB]` and `abp show JOB UNIT`, answered without Typer, pydantic or SQLAlchemy.

A user types these dozens of times while a job runs; importing Typer, pydantic and SQLAlchemy took
most of their time (docs/benchmarks.md, issue 16). Here they run on the store's direct reads
(`store.direct`), derive their views where every interface does (`service.readout`) and print them
with the same renderers as the full CLI (`cli.output`; `--json` without Rich at all), so what they
print is the same, byte for byte (tests/integration/test_cli_direct_reads.py runs both ways).

Only exactly these command lines are answered here: `list [--status S] [--json]`, `status [JOB]
[--json]`, `show JOB UNIT [--json]`. Anything else (`--help`, an unknown option, a missing argument),
and anything the direct reads cannot answer (no store yet, a store to migrate or to refuse, a
unit by key) or any error (an unknown job, a bad
`--status`), goes to the full CLI, which says it as it always has: help and error messages have
one source. `ABP_DIRECT_READS=0` sends every command there.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from agentic_batch.errors import AbpError
from agentic_batch.service import readout
from agentic_batch.states import JobStatus
from agentic_batch.store.direct import DirectReads, Unavailable, open_direct

#: The options each command takes that have no value, and those that take one (as Click parses them).
_FLAGS = {"list": ({"--json"}, {"--status"}), "status": ({"--json"}, set()), "show": ({"--json"}, set())}
#: Positional arguments: (least, most).
_ARGUMENTS = {"list": (0, 0), "status": (0, 1), "show": (2, 2)}


def parse(args: list[str]) -> tuple[str, list[str], dict[str, str | bool]] | None:
    """(command, arguments, options) when `args` is exactly a read command line; else None."""
    command, rest = args[0], args[1:]
    flags, valued = _FLAGS[command]
    positional: list[str] = []
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if arg in flags:
            options[arg] = True
        elif name in valued and eq:
            options[name] = value
        elif arg in valued and i + 1 < len(rest):
            options[arg] = rest[i + 1]
            i += 1
        elif arg.startswith("-"):  # `--help`, `--`, an unknown option, a negative number: Click says it
            return None
        else:
            positional.append(arg)
        i += 1
    least, most = _ARGUMENTS[command]
    if not least <= len(positional) <= most:
        return None
    return command, positional, options


def answer(args: list[str]) -> int | None:
    """Print the answer to a read command line and return its exit code, or None (nothing printed):
    the full CLI answers it."""
    if os.environ.get("ABP_DIRECT_READS", "").strip() == "0":
        return None
    parsed = parse(args)
    if parsed is None:
        return None
    command, positional, options = parsed
    try:
        from agentic_batch.config import load_settings

        settings = load_settings()
        store = open_direct(settings.db_url)
    except (Unavailable, AbpError):
        return None
    try:
        show = _gather(store, settings, command, positional, options)
    except (Unavailable, AbpError):
        return None
    except Exception:
        if os.environ.get("ABP_DEBUG"):
            raise
        return None  # whatever it was, the full CLI reports it in its words
    finally:
        store.close()
    show()
    return 0


def _gather(store: DirectReads, settings: Any, command: str, positional: list[str],
            options: dict[str, str | bool]) -> Any:
    """Read everything the command prints (before printing anything); return what prints it."""
    as_json = bool(options.get("--json"))
    if command == "list" or (command == "status" and not positional):
        status = options.get("--status")
        rows = readout.job_rows(store, status=status if isinstance(status, str) else None)
        if as_json:
            return lambda: _json(rows)
        if command == "list" and not rows:
            return lambda: _no_jobs(status if isinstance(status, str) else None)
        return lambda: _table(rows)
    job = readout.resolve_job(store, positional[0])
    if command == "status":
        view = readout.status_fields(store, settings, job)
        if as_json:
            return lambda: _json(view)
        active = readout.active_unit_fields(store, job) if view["running"] else None
        return lambda: _panel(view, active)
    unit = readout.find_unit(store, job, positional[1])
    detail = readout.unit_view_fields(store, job, unit)
    detail["events"] = readout.event_fields(store, store.list_events(unit_id=unit.id, limit=2000), unit.number)
    if as_json:
        return lambda: _json(detail)
    return lambda: _unit(detail, job.worker)


def _json(data: Any) -> None:
    from agentic_batch.cli.jsonout import print_json_data

    print_json_data(data)


def _no_jobs(status: str | None) -> None:
    from agentic_batch.cli.output import err

    err.print("no jobs" + (f" with status {status}" if status else "") + "; create one with `abp create`")


def _table(rows: list[dict[str, Any]]) -> None:
    from agentic_batch.cli.output import jobs_table, out

    out.print(jobs_table([SimpleNamespace(**r) for r in rows]))  # type: ignore[misc]


def _panel(view: dict[str, Any], active: list[dict[str, Any]] | None) -> None:
    from agentic_batch.cli.output import err, out, status_panel

    out.print(status_panel(_job_view(view), [_active(a) for a in active] if active is not None else None))
    if view["status"] == JobStatus.RUNNING and view["executor"]["state"] != "running":
        err.print(f"[yellow]no executor is running this job[/yellow]: `abp resume {view['id']}`")


def _unit(detail: dict[str, Any], worker: str) -> None:
    from agentic_batch.cli.output import unit_report

    view = SimpleNamespace(**{**detail, "cached_from": _maybe(detail["cached_from"]),
                              "events": [SimpleNamespace(**e) for e in detail["events"]]})
    unit_report(view, "job " + str(detail["job_id"]), worker=worker)  # type: ignore[arg-type]


def _job_view(view: dict[str, Any]) -> Any:
    """The status dict with attribute access where the panel reads a nested model."""
    executor = view["executor"]
    batches = view["batches"]
    return SimpleNamespace(**{
        **view, "reduce": _maybe(view["reduce"]),
        "executor": SimpleNamespace(**{**executor, "executors": [SimpleNamespace(**e) for e in executor["executors"]]}),
        "batches": None if batches is None else SimpleNamespace(
            **{**batches, "batches": [SimpleNamespace(**b) for b in batches["batches"]]})})


def _active(unit: dict[str, Any]) -> Any:
    return SimpleNamespace(**{**unit, "last_event": _maybe(unit["last_event"])})


def _maybe(value: dict[str, Any] | None) -> Any:
    return None if value is None else SimpleNamespace(**value)

