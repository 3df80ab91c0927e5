"""`abp service install|show`: run `abp resume --all` at boot (a systemd user unit, or a crontab line)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agentic_batch.cli.common import AbpGroup, JsonFlag, use_abp_command_class
from agentic_batch.cli.output import err, markup_safe, print_json
from agentic_batch.service.models import BootUnit

service_app = typer.Typer(name="service", help="Resume interrupted jobs at boot (systemd user unit).",
                          no_args_is_help=True, cls=AbpGroup, rich_markup_mode="markdown")


def _report(unit: BootUnit, as_json: bool, header: str) -> None:
    if as_json:
        print_json(unit)
        return
    err.print(header)
    if unit.next_steps:
        err.print("Then run:")
        for step in unit.next_steps:
            err.print(f"  {markup_safe(step)}")
    err.print(f"Without systemd, this crontab line (`crontab -e`) does the same:\n  {markup_safe(unit.crontab)}")


@service_app.command("install")
def install(enable: Annotated[bool, typer.Option("--enable", help="Also run `systemctl --user daemon-reload` and "
                                                 "`enable` (otherwise it prints them).")] = False,
            force: Annotated[bool, typer.Option("--force", help="Replace a different unit of the same name.")]
            = False,
            as_json: JsonFlag = False) -> None:
    """Write ~/.config/systemd/user/abp-resume.service, which runs `abp resume --all` at boot (not enabled
    unless --enable)."""
    from agentic_batch.config import load_settings
    from agentic_batch.service.boot import install_unit

    unit = install_unit(load_settings(), enable=enable, force=force)
    verb = "replaced" if unit.replaced else "wrote"
    _report(unit, as_json, f"{verb} {markup_safe(unit.path)}" + (" and enabled it" if unit.enabled else ""))


@service_app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """Print the unit `abp service install` would write, and the equivalent @reboot crontab line."""
    from agentic_batch.config import load_settings
    from agentic_batch.service.boot import show_unit

    unit = show_unit(load_settings())
    if as_json:
        print_json(unit)
        return
    sys.stdout.write(unit.unit)  # the file's text as it is (no markup, no escaping of its newlines)
    sys.stdout.flush()
    _report(unit, False, f"# {markup_safe(unit.path)}")


def register(app: typer.Typer) -> None:
    use_abp_command_class(service_app)  # `abp service install --help` labels flags as every command does
    app.add_typer(service_app)
