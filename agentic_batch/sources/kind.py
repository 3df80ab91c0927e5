"""What a source kind declares: `SourceKind`, the one object the registry, the CLI, REST and MCP read.

A kind's fields are a Pydantic options model (a field without a default is one the kind needs; its
`description` is what REST, MCP and `list_sources` show; a `Flag` gives it a CLI flag). Its module
reads items (`iterate`), makes its paths absolute at create time (`resolve`), and names the source in
one line (`describe`). `SourceSpec` (see registry) is every kind's fields side by side, so REST and
MCP keep taking one flat object: `{"kind": "csv", "path": ..., "key": ...}`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.flags import SOURCE_PANEL, Flag

#: What a source kind yields: a human name for the item's place, and its payload.
RawItem = tuple[str, dict[str, Any]]

#: A data file's path: the same field (`path`) in csv, json and jsonl, each with its own flag.
PATH_DOC = "path of the data file (absolute, or relative to the job's workdir)"

O = TypeVar("O", bound=BaseModel)  # noqa: E741 (the options model of a kind)


class SourceSpecBase(BaseModel):
    """The fields every source kind has. `registry.SourceSpec` adds each kind's own fields."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    key: Annotated[str | None, Flag(SOURCE_PANEL, help="Item field that identifies an item (default: path for "
                                                       "files, else a hash of the item).")] = Field(
        default=None, description="item field that identifies an item (default: relative path for files, else a "
                                  "content hash); re-creating or syncing never duplicates a key")
    priority_field: Annotated[str | None, Flag(SOURCE_PANEL, help="Item field holding a unit priority "
                                                                  "(low..critical or a number).")] = Field(
        default=None, description="item field holding a unit priority (low, normal, high, critical or an integer)")


@dataclass(frozen=True)
class SourceKind(Generic[O]):
    """One kind of source. Register its module in `registry._MODULES`; nothing else names it."""

    name: str
    #: What one item is and which fields it has: `list_sources` and MCP's `source` argument say it.
    items: str
    #: Its fields. Required ones (no default) must be non-empty; a `Flag` named `--<name>` marks the
    #: field the kind's own CLI flag sets (`--csv PATH`).
    options_model: type[O]
    #: Its items, in a deterministic order, as `(where, payload)` (`where` names the item in errors).
    iterate: Callable[[O, Path], Iterator[RawItem]]
    #: The options with every path made absolute against the job's working directory.
    resolve: Callable[[O, Path], O]
    #: A short line for listings: "csv /data/x.csv".
    describe: Callable[[O], str]
    #: The payload field that keys an item when the source gives no `key` (else a content hash).
    natural_key: str | None = None

    def options(self, spec: BaseModel) -> O:
        """This kind's options out of a (flat) source spec."""
        return self.options_model.model_validate({name: getattr(spec, name)
                                                  for name in self.options_model.model_fields})


def absolute(path: str, base: str | os.PathLike[str]) -> str:
    """`path` (`~` expanded) made absolute against `base`."""
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))
