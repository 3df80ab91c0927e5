"""How a spec field is spelt on the command line: the one thing the CLI needs that a field lacks.

A job option or a source field is declared once, as a Pydantic field (type, default, range,
`description`): REST takes it by that name, MCP `create_job` publishes it as an argument, and the CLI
generates a flag from it when the field carries a `Flag` in its `Annotated[...]` metadata:

    timeout_s: Annotated[float, Flag(RUN, name="--timeout")] = Field(default=600.0, gt=0, description=...)

Pydantic keeps the `Flag` in `FieldInfo.metadata` and ignores it. A field without one is left to the
CLI to build by hand (the source, the worker and its options, the working directory).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.fields import FieldInfo

#: The sections of `abp create --help`.
SOURCE_PANEL, PROMPT_PANEL, RUN_PANEL, ISOLATION_PANEL = "Source", "Prompt", "Execution", "Isolation"
BATCH_PANEL = "Provider batch API"


@dataclass(frozen=True, slots=True)
class Flag:
    """The CLI's spelling of a field. Errors name the field by it too (see `errors.field_ref`)."""

    #: The `--help` section the flag is listed in.
    panel: str
    #: `--help` words, when the field's description (written for REST and MCP) does not suit a terminal.
    help: str | None = None
    #: The flag, when it is not `--` + the field name with dashes (`--timeout` for `timeout_s`).
    name: str | None = None
    #: The value's label in `--help`, when not its type (`<k=v>`).
    metavar: str | None = None
    #: The flag names a file that holds the value (JSON, unless the field is text).
    file: bool = False

    def flag(self, field_name: str) -> str:
        return self.name or "--" + field_name.replace("_", "-")


def flag_of(field: FieldInfo) -> Flag | None:
    """The field's `Flag`, if it has one."""
    return next((m for m in field.metadata if isinstance(m, Flag)), None)
