"""Result rows: one flat dict per unit, shared by exports, the reduce step and every interface.

A row is the unit's number in the job (`unit`), its key, the item's fields, then status, output,
error, cost and attempts; a command unit's `exit_code`, `stdout` and `stderr`; for a unit the result
cache completed, `cached_from` (`JOB/UNIT`); structured output fields (a dict in `data`) become
`data.<field>` columns.
An item field whose name clashes with a result column is kept as `item.<name>`.
"""

from __future__ import annotations

import array
import csv
import io
import itertools
import json
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agentic_batch.store import Store
from agentic_batch.store.records import ResultRecord, UnitRecord
from agentic_batch.workers.pricing import usd

#: A process worker's exit code and streams, kept apart from `output` (columns of rows whose unit ran
#: a process: the `command` worker's units).
PROCESS_COLUMNS = ("exit_code", "stdout", "stderr")

RESULT_COLUMNS = ("status", "output", "error", "error_class", "cost_usd", "tokens_in", "tokens_out",
                  "attempts", "duration_s", "cached_from", *PROCESS_COLUMNS)


def cached_from_cell(origin: tuple[int, int] | None) -> str | None:
    """The `cached_from` column: `JOB/UNIT` of the unit a cached result came from (the one that ran)."""
    return f"{origin[0]}/{origin[1]}" if origin else None


#: What a result row is made from: a `ResultRecord` (exports: only the columns a row shows) or a whole
#: `UnitRecord`; the two share the field names a row reads.
ResultSource = ResultRecord | UnitRecord


#: Column names a row fills from the unit itself (always scalars); item fields of these names are renamed.
_OWN_COLUMNS = frozenset(("unit", "key", *RESULT_COLUMNS))


def unit_row(unit: ResultSource, origins: dict[int, tuple[int, int]] | None = None) -> dict[str, Any]:
    """A unit as a result row; `origins` (unit id -> job id, number) names where cached results came from."""
    row: dict[str, Any] = {"unit": unit.number, "key": unit.key}
    for name, value in unit.payload.items():
        row[f"item.{name}" if name in _OWN_COLUMNS else name] = value
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    row["status"] = unit.status
    row["output"] = unit.output
    row["error"] = unit.error
    row["error_class"] = unit.error_class
    row["cost_usd"] = usd(unit.cost_usd)
    row["tokens_in"] = unit.tokens_in
    row["tokens_out"] = unit.tokens_out
    row["attempts"] = unit.attempt
    row["duration_s"] = round(duration, 3) if duration is not None else None
    row["cached_from"] = cached_from_cell((origins or {}).get(unit.cached_from)) if unit.cached_from else None
    if unit.exit_code is not None:
        row["exit_code"] = unit.exit_code
        row["stdout"] = unit.stdout
        row["stderr"] = unit.stderr
    data = unit.data
    if isinstance(data, dict):
        for name, value in data.items():
            row[f"data.{name}"] = value
    elif data is not None:
        row["data"] = data
    return row


def iter_rows(store: Store, job_id: int, statuses: Iterable[str] | None = None,
              counter: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows in unit order; `counter[0]` (if given) counts them as they go."""
    records = store.units.iter_results(job_id, list(statuses) if statuses else None, batch_size=PAGE)
    while page := list(itertools.islice(records, PAGE)):
        yield from unit_rows(store, page, counter)


#: Units read (and cached origins looked up) at a time.
PAGE = 2000


def unit_rows(store: Store, page: Sequence[ResultSource],
              counter: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a page of units, the origins of its cached units looked up at once."""
    cached = [u.cached_from for u in page if u.cached_from]
    origins = store.cache.origins(cached) if cached else None
    for unit in page:
        if counter is not None:
            counter[0] += 1
        yield unit_row(unit, origins)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _JSON_CELL.encode(value)
    return "" if value is None else value


#: `json.dumps(value, ensure_ascii=False)` for a nested cell, and with `default=str` for a JSON line,
#: each made once (`dumps` with options builds an encoder per call).
_JSON_CELL = json.JSONEncoder(ensure_ascii=False)
_JSON_LINE = json.JSONEncoder(ensure_ascii=False, default=str)


def iter_export(store: Store, job_id: int, fmt: str, statuses: Iterable[str] | None = None,
                counter: list[int] | None = None) -> Iterator[str]:
    """Stream an export as text chunks: json (an array), jsonl, or csv."""
    statuses = list(statuses) if statuses else None
    if fmt not in ("json", "jsonl", "csv"):
        from agentic_batch.errors import InvalidSpec

        raise InvalidSpec(f"unknown export format {fmt!r}", hint="use json, jsonl or csv")
    if fmt == "jsonl":
        yield from _joined(_JSON_LINE.encode(row) + "\n" for row in iter_rows(store, job_id, statuses, counter))
    elif fmt == "json":
        rows = iter_rows(store, job_id, statuses, counter)
        first = next(rows, None)
        if first is None:
            yield "[\n]\n"
            return
        yield "[\n" + _JSON_LINE.encode(first)
        yield from _joined(",\n" + _JSON_LINE.encode(row) for row in rows)
        yield "\n]\n"
    elif fmt == "csv":
        yield from _iter_csv(iter_rows(store, job_id, statuses, counter))


def _joined(parts: Iterable[str], chunk: int = 65536) -> Iterator[str]:
    """The parts in chunks of about `chunk` characters (a write or an HTTP frame per row costs more
    than the row)."""
    batch: list[str] = []
    size = 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= chunk:
            yield "".join(batch)
            batch, size = [], 0
    if batch:
        yield "".join(batch)


#: The spool's block header: the block's bytes, its rows, and the number of columns they were written with.
_BLOCK = struct.Struct("<QQQ")


def _iter_csv(rows: Iterable[dict[str, Any]], chunk: int = 65536) -> Iterator[str]:
    """CSV in one pass over the rows, in constant memory.

    The header is the union of every row's fields (item fields and `data.*` vary by row), known only
    at the end; reading the units twice (once for the names) doubled an export's store reads. So rows
    are written at once, with the columns known so far, to a temporary file, in blocks of about
    `chunk` characters that share a column count (`_BLOCK`, then each row's end offset, then the CSV
    text). Columns are only ever appended (first-seen order), so a block written before a later
    column appeared is completed by padding each of its rows with empty cells when the file is copied
    out after the header: the same bytes a two-pass DictWriter writes.

    A row's cells are placed by a plan kept per distinct field order (most jobs have one or a few):
    where each field goes, and which fields may hold a dict or a list (item and `data.*` fields; the
    unit's own columns are scalars) to be written as JSON.
    """
    columns: dict[str, int] = {}
    plans: dict[tuple[str, ...], tuple[list[int] | None, list[int]]] = {}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    ends = array.array("q")
    width = 0
    with tempfile.TemporaryFile() as spool:

        def flush() -> None:
            data = buffer.getvalue().encode("utf-8")
            spool.write(_BLOCK.pack(len(data), len(ends), width))
            spool.write(ends.tobytes())
            spool.write(data)
            buffer.seek(0)
            buffer.truncate()
            del ends[:]

        for row in rows:
            names = tuple(row)
            plan = plans.get(names)
            if plan is None:
                for name in names:
                    if name not in columns:
                        columns[name] = len(columns)
                places = [columns[name] for name in names]
                nested = [columns[name] for name in names if name not in _OWN_COLUMNS]
                plan = plans[names] = (None if places == list(range(len(places))) else places, nested)
            order, nested = plan
            if len(columns) != width:
                if ends:
                    flush()
                width = len(columns)
            if order is None:  # the fields are the first columns, in order: the common case
                cells = list(row.values())
                if len(cells) < width:  # columns appeared since this plan was made
                    cells += [None] * (width - len(cells))
            else:
                cells = [None] * width
                for place, value in zip(order, row.values(), strict=True):
                    cells[place] = value
            for place in nested:
                value = cells[place]
                if isinstance(value, (dict, list)):
                    cells[place] = _JSON_CELL.encode(value)
            writer.writerow(cells)
            ends.append(buffer.tell())
            if ends[-1] >= chunk:
                flush()
        if ends:
            flush()
        total = len(columns)
        spool.seek(0)
        writer.writerow(list(columns))
        parts, size = [buffer.getvalue()], 0
        while head := spool.read(_BLOCK.size):
            length, count, written = _BLOCK.unpack(head)
            offsets = array.array("q")
            offsets.frombytes(spool.read(count * offsets.itemsize))
            text = spool.read(length).decode("utf-8")
            if written < total:  # each row ends with the writer's "\r\n"
                pad = "," * (total - written) + "\r\n"
                start = 0
                pieces = []
                for end in offsets:
                    pieces.append(text[start:end - 2])
                    pieces.append(pad)
                    start = end
                text = "".join(pieces)
            parts.append(text)
            size += len(text)
            if size >= chunk:
                yield "".join(parts)
                parts, size = [], 0
        yield "".join(parts)


def write_export(store: Store, job_id: int, fmt: str, path: Path, statuses: Iterable[str] | None = None) -> int:
    """Write an export to `path` atomically (temp file + rename). Returns the number of rows."""
    tmp = path.with_name(path.name + ".tmp")
    counter = [0]
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            for chunk in iter_export(store, job_id, fmt, statuses, counter):
                handle.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return counter[0]
