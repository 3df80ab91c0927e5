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

from agentic_batch.errors import SourceError
from agentic_batch.sources.base import RawItem, open_source_file
from agentic_batch.spec import SourceSpec

_QUOTE_HINT = "quote fields that contain the delimiter, a quote or a line break, and double inner quotes"


def iter_csv(spec: SourceSpec) -> Iterator[RawItem]:
    """Yield `{column: text}` per data row; the place of each item is the line the row starts on."""
    path = spec.path or ""
    with open_source_file(path, "csv") as handle:
        reader = csv.reader(handle, delimiter=spec.delimiter, strict=True)
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
        return next(reader)
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
