"""A `csv` source: one item per row, the header row gives the field names.

Strict on purpose: a row with more or fewer fields than the header, or a quote that is never closed,
is an error naming the line, never a silently padded or truncated item (a shifted column would send
the wrong text to every agent). Only a completely empty line is skipped. The reader is the stdlib
`csv` module over the open file, so a 500k-row file streams row by row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentic_batch.errors import SourceError, field_ref
from agentic_batch.flags import SOURCE_PANEL, Flag
from agentic_batch.sources.kind import PATH_DOC, RawItem, SourceKind, absolute
from agentic_batch.sources.reading import open_source_file

_QUOTE_HINT = "quote fields that contain the delimiter, a quote or a line break, and double inner quotes"


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Flag(SOURCE_PANEL, name="--csv", help="CSV file; the header row names the fields.")] = Field(
        description=PATH_DOC)
    delimiter: Annotated[str, Flag(SOURCE_PANEL, help="CSV field delimiter.")] = Field(
        default=",", description="CSV field delimiter, one character",
        json_schema_extra={"minLength": 1, "maxLength": 1})  # checked by _one_character, in its own words

    @model_validator(mode="after")
    def _one_character(self) -> CsvOptions:
        if len(self.delimiter) != 1:
            raise ValueError(f"{field_ref('source.delimiter')} must be one character, got {self.delimiter!r}")
        return self


def iter_csv(options: CsvOptions, cwd: Path | None = None) -> Iterator[RawItem]:
    """Yield `{column: text}` per data row; the place of each item is the line the row starts on."""
    path = options.path
    with open_source_file(path, "csv") as handle:
        reader = csv.reader(handle, delimiter=options.delimiter, strict=True)
        header = _read_header(reader, path)
        width = len(header)
        while True:
            start = reader.line_num + 1
            row = _next_row(reader, path, start)
            if row is None:
                return
            if not row:
                continue  # an empty line
            if len(row) != width:
                raise SourceError(
                    f"line {start} of {path} has {len(row)} fields but the header has {width}",
                    hint=_QUOTE_HINT,
                )
            yield f"line {start} of {path}", dict(zip(header, row, strict=True))


def _next_row(reader: Any, path: str, start: int) -> list[str] | None:
    """The next row, None at the end; csv and decoding errors name the line the record starts on."""
    try:
        row: list[str] = next(reader)
        return row
    except StopIteration:
        return None
    except csv.Error as exc:
        end = reader.line_num
        span = f" (the record runs to line {end}; is a quote never closed?)" if end > start else ""
        raise SourceError(f"malformed csv at line {start} of {path}: {exc}{span}", hint=_QUOTE_HINT) from None
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"csv file {path} is not valid UTF-8 text near line {start} ({exc.reason})",
            hint="convert it to UTF-8, e.g. with iconv",
        ) from None


def _read_header(reader: Any, path: str) -> list[str]:
    """The first non-empty row; names must be non-empty and unique (they become template fields)."""
    while True:
        start = reader.line_num + 1
        row = _next_row(reader, path, start)
        if row is None:
            raise SourceError(
                f"csv file {path} is empty; it needs a header row of field names",
                hint="add a first line like: id,title,body",
            )
        if row:
            break
    seen: dict[str, int] = {}
    for column, name in enumerate(row, 1):
        if name == "":
            raise SourceError(
                f"column {column} of the header (line {start} of {path}) has no name",
                hint="give every column a name in the first row",
            )
        if name in seen:
            raise SourceError(
                f"the header (line {start} of {path}) names column {name!r} twice "
                f"(columns {seen[name]} and {column})",
                hint="rename one of them",
            )
        seen[name] = column
    return row


def _describe(options: CsvOptions) -> str:
    sep = f" (delimiter {options.delimiter!r})" if options.delimiter != "," else ""
    return f"csv {options.path}{sep}"


KIND = SourceKind(
    name="csv", items="one item per row; the header row names the fields", options_model=CsvOptions,
    iterate=iter_csv, describe=_describe,
    resolve=lambda o, cwd: o.model_copy(update={"path": absolute(o.path, cwd)}),
)
