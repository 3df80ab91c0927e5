"""Argument types of the tools: JSON Schema a model reads, with a description on every field.

The `source` argument publishes SourceSpec's own schema (every source kind's fields, with their
descriptions), but the SDK only checks that it is an object: the real validation is JobSpec's, inside
the service, so a bad source gets the same one-line message as on the command line.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from agentic_batch.sources.registry import SourceSpec, get_source_kind, required_fields, source_kinds


def source_schema() -> dict[str, Any]:
    schema = copy.deepcopy(SourceSpec.model_json_schema())
    schema.pop("title", None)
    kinds = "; ".join(f"{name}: needs {', '.join(required_fields(get_source_kind(name)))}"
                      for name in source_kinds())
    schema["description"] = (
        "Where the items come from; abp reads it itself, so never paste the items into the conversation. "
        f"Set `kind` and the fields that kind uses ({kinds}). Paths should be absolute (relative ones "
        "resolve against `workdir`). Example: {\"kind\": \"csv\", \"path\": \"/data/tickets.csv\", \"key\": \"id\"}."
    )
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


JobRef = Annotated[int | str, Field(
    description="The job id returned by create_job (a unique job name, or \"last\" for the newest job, also works).")]
UnitRef = Annotated[int | str, Field(
    description="The unit's number in the job (1, 2, ...: `unit` in results, `number` in get_unit), or "
                "\"key:KEY\" for the unit whose key is KEY.")]
StatusFilter = Annotated[str | None, Field(
    description="Only units with this status: pending, running, completed, failed or cancelled "
                "(comma-separate several: \"failed,cancelled\"). Default: all.")]
MaxChars = Annotated[int, Field(ge=100, le=100_000, description="Cut text values longer than this many characters "
                                                                "(the result says what was cut).")]

SourceArg = Annotated[dict[str, Any], WithJsonSchema(source_schema())]
ExportFormat = Literal["json", "jsonl", "csv"]
