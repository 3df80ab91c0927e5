"""Shared bits of the CLI commands: the orchestrator, the job argument, help rendering, small helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:  # the service (SQLAlchemy, Jinja2...) is imported when a command needs it: `--help` stays quick
    from agentic_batch.service import Orchestrator

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id, its name when unique, or `last`.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_orchestrator: Orchestrator | None = None


def orchestrator() -> Orchestrator:
    global _orchestrator
    if _orchestrator is None:
        from agentic_batch.service import Orchestrator

        _orchestrator = Orchestrator()
    return _orchestrator


def _plain_labels(params: list[Any]) -> list[Any]:
    """Typer labels every parameter with its Python type: `<bool>` beside a flag that takes no value
    (`--help`, `--json`) misleads, so flags get no label (an empty metavar is shown as nothing)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class AbpCommand(TyperCommand):
    """Every `abp` command: flags without a type label; `JOB` (not Typer's `{JOB}`) in the usage line
    for a required argument, `[JOB]` for an optional one."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_labels(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.display_name_raw + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class AbpGroup(TyperGroup):
    """The `abp` group: its own `--help` without a `<bool>` label either."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_labels(super().get_params(ctx))


def use_abp_command_class(app: typer.Typer) -> None:
    """Give every registered command the `AbpCommand` class (one place, not a `cls=` per command)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # Typer's default; a command asking for another keeps it
            info.cls = AbpCommand
