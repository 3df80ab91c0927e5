"""`abp`: the command line. A thin adapter over the service layer (Typer + Rich).

Errors a user can fix print one line (`error: ...`) and exit 1; usage errors exit 2; nothing prints
a traceback unless ABP_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    app: typer.Typer

_APP_HELP = ("agentic-batch: run an AI agent over every item of a large workload, in parallel, and never lose an "
             "item.\n\nTypical flow: `abp create ...` (prints a job id) → `abp start JOB` (runs the first item as a "
             "test) → `abp start JOB --approve` (detached executor) → `abp watch JOB` → `abp results JOB`. "
             "`abp run ...` does all of it in one go.")
_app: typer.Typer | None = None


def _the_app() -> typer.Typer:
    """The Typer app (`agentic_batch.cli.app`), built on first use: `abp list` answered by `cli.quick`
    imports neither Typer nor Click."""
    global _app
    if _app is None:
        import typer

        from agentic_batch.cli.common import AbpGroup

        _app = typer.Typer(name="abp", help=_APP_HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                           add_completion=False, rich_markup_mode="markdown", cls=AbpGroup)
        # A group callback keeps `abp` a group with only one command registered: Typer would otherwise
        # run a lone command (`abp mcp`, registered alone) without its name.
        _app.callback()(_group)
    return _app


def _group() -> None:
    """(The `abp` group itself: no options of its own.)"""


def __getattr__(name: str) -> Any:
    if name == "app":
        return _the_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The modules that register the commands, in help order.
COMMAND_MODULES = ("job_commands", "add_command", "control_commands", "delete_commands", "view_commands",
                   "error_commands", "review_commands", "serve_command", "mcp_command", "service_command")

#: The module each command lives in: `abp list` registers (and imports) the view commands alone, not
#: `create`'s flags built from every worker's options, and `abp mcp` (started by every MCP client
#: session) only the MCP server. A name missing here (a typo, `--help`) registers them all;
#: tests/unit/test_cli_imports.py keeps the table complete.
COMMAND_HOME = {
    "create": "job_commands", "run": "job_commands", "start": "job_commands", "edit": "job_commands",
    "sync": "job_commands",
    "stop": "control_commands", "resume": "control_commands", "cancel": "control_commands",
    "retry": "control_commands", "wait": "control_commands", "executor": "control_commands",
    "status": "view_commands", "list": "view_commands", "watch": "view_commands", "results": "view_commands",
    "show": "view_commands", "logs": "view_commands",
    "delete": "delete_commands", "prune": "delete_commands",
    "diff": "review_commands", "review": "review_commands", "apply": "review_commands", "clean": "review_commands",
    "add": "add_command", "errors": "error_commands", "serve": "serve_command", "mcp": "mcp_command",
    "service": "service_command",
}


def _register(args: list[str] | None = None) -> None:
    from importlib import import_module

    from agentic_batch.cli.common import use_abp_command_class

    home = COMMAND_HOME.get(args[0]) if args else None
    for name in [home] if home else COMMAND_MODULES:
        if name not in _registered:  # in-process callers (tests) may register one module, then all
            import_module(f"agentic_batch.cli.{name}").register(_the_app())
            _registered.add(name)
    use_abp_command_class(_the_app())


_registered: set[str] = set()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if _is_detached_executor(args):
        sys.exit(_run_executor(int(args[1]), join="--join" in args))
    if args[:1] in (["list"], ["status"], ["show"]):
        from agentic_batch.cli.quick import answer

        code = answer(args)  # None: not a plain read, or the direct reads cannot answer it; the full CLI does
        if code is not None:
            sys.exit(code)
    from agentic_batch.engine import warm

    if args[:2] == ["executor", warm.WARM_FLAG]:
        sys.exit(warm.serve(args[2:]))
    warm.prespawn(args)  # before the imports below: the executor's start-up overlaps ours
    try:
        _main(args)
    finally:
        warm.discard()


def _main(args: list[str]) -> None:
    from agentic_batch.cli.output import err
    from agentic_batch.errors import AbpError

    if args and args[0] in ("create", "run", "add"):
        from agentic_batch.cli.spec_options import rewrite_json_flag  # every worker's flags: not for `abp list`

        args = rewrite_json_flag(args)
    _register(args)
    try:
        _the_app()(args=args, prog_name="abp")  # standalone: click handles usage errors (exit 2) and typer.Exit
    except AbpError as exc:
        from agentic_batch.cli.spec_options import flag_for

        message, hint_text = exc.in_words(flag_for)  # spec fields as flags: `--timeout`, not `timeout_s`
        hint = f" [dim]({_escape(hint_text)})[/dim]" if hint_text else ""
        err.print(f"[red]error:[/red] {_escape(message)}{hint}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("ABP_DEBUG"):
            raise
        from agentic_batch.store.faults import store_error_for

        store_error = store_error_for(exc)  # a store fault: one line saying what to free or fix, no SQL
        if store_error is not None:
            hint = f" [dim]({_escape(store_error.hint)})[/dim]" if store_error.hint else ""
            err.print(f"[red]error:[/red] {_escape(store_error.message)}{hint}")
            sys.exit(1)
        err.print(f"[red]internal error:[/red] {_escape(type(exc).__name__)}: {_escape(str(exc))} "
                  "[dim](set ABP_DEBUG=1 for the traceback)[/dim]")
        sys.exit(70)


def _is_detached_executor(args: list[str]) -> bool:
    """`executor <id> [--join]`, as `launch_executor` spawns it: skip building the whole CLI (Typer,
    Rich, every worker's flags), which would delay the job's first unit by a few hundred ms."""
    from agentic_batch.refs import parse_id

    return (len(args) in (2, 3) and args[0] == "executor" and parse_id(args[1]) is not None
            and args[2:] in ([], ["--join"]))


def _run_executor(job_id: int, join: bool) -> int:
    from agentic_batch.engine.executor import Executor
    from agentic_batch.errors import AbpError

    from agentic_batch.store.faults import store_error_for

    try:
        return Executor(job_id, join=join).run()
    except AbpError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    except Exception as exc:
        store_error = store_error_for(exc)
        if store_error is None:
            raise
        print(f"error: {store_error.one_line()}", file=sys.stderr)
        return 1


def _escape(text: str) -> str:
    """A message that may quote user data (a job name, a key): control characters escaped, markup inert."""
    from agentic_batch.cli.output import markup_safe

    return markup_safe(text)
