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
import itertools
import json
import operator
import struct
import tempfile
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

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
        yield from (data.decode("utf-8") for data in _iter_csv_units(store, job_id, statuses, counter))


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


class _CsvSpool:
    """CSV in one pass over the rows, in constant memory.

    The header is the union of every row's fields (item fields and `data.*` vary by row), known only
    at the end; reading the units twice (once for the names) doubled an export's store reads. So rows
    are written at once, with the columns known so far, to a temporary file, in blocks of about
    `chunk` characters that share a column count (`_BLOCK`, then each row's end offset, then the CSV
    text). Columns are only ever appended (first-seen order), so a block written before a later
    column appeared is completed by padding each of its rows with empty cells when the file is copied
    out after the header: the same bytes a two-pass DictWriter writes.

    A row's cells are placed by a plan kept per row shape (most jobs have one or a few): where each
    field goes, and which fields may hold a dict or a list (item and `data.*` fields; the unit's own
    columns are scalars) to be written as JSON. The `csv` writer writes into a list (one string per
    row, so a row's end is known without asking a buffer where it is); None is its empty cell.
    """

    def __init__(self, spool: IO[bytes], chunk: int) -> None:
        self.spool, self.chunk = spool, chunk
        self.columns: dict[str, int] = {}
        self.plans: dict[Hashable, tuple[list[int] | None, list[int]]] = {}
        self.width = 0
        self.lines: list[str] = []
        self.size = 0  # characters in `lines`
        self.writer = csv.writer(_Appender(self.lines))

    def plan(self, shape: Hashable, names: Sequence[str]) -> tuple[list[int] | None, list[int]]:
        """The plan of a new row shape whose cells are `names`, in order (rows already written are
        flushed first when it adds columns: their block keeps its own width)."""
        columns = self.columns
        for name in names:
            if name not in columns:
                columns[name] = len(columns)
        places = [columns[name] for name in names]
        nested = [columns[name] for name in names if name not in _OWN_COLUMNS]
        plan = self.plans[shape] = (None if places == list(range(len(places))) else places, nested)
        if len(columns) != self.width:
            self.flush()
            self.width = len(columns)
        return plan

    def place(self, plan: tuple[list[int] | None, list[int]], values: list[Any],
              check_nested: bool = True) -> list[Any]:
        """A row's cells in column order (None where it has no field), nested values as JSON."""
        order, nested = plan
        width = self.width
        if order is None:  # the fields are the first columns, in order: the common case
            cells = values
            if len(cells) < width:  # columns appeared since this plan was made
                cells += [None] * (width - len(cells))
        else:
            cells = [None] * width
            for place, value in zip(order, values, strict=True):
                cells[place] = value
        if check_nested:
            for place in nested:
                value = cells[place]
                if isinstance(value, (dict, list)):
                    cells[place] = _JSON_CELL.encode(value)
        return cells

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        lines = self.lines
        before = len(lines)
        self.writer.writerows(rows)
        self.size += sum(map(len, lines[before:]))
        if self.size >= self.chunk:
            self.flush()

    def flush(self) -> None:
        lines = self.lines
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        ends = array.array("q", itertools.accumulate(map(len, lines)))
        self.spool.write(_BLOCK.pack(len(data), len(ends), self.width))
        self.spool.write(ends.tobytes())
        self.spool.write(data)
        lines.clear()
        self.size = 0

    def out(self) -> Iterator[bytes]:
        """The header, then every block, padded to the final columns, as UTF-8, in chunks."""
        self.flush()
        total = len(self.columns)
        self.writer.writerow(list(self.columns))
        header = self.lines.pop()
        spool, chunk = self.spool, self.chunk
        spool.seek(0)
        parts, size = [header.encode("utf-8")], 0
        while head := spool.read(_BLOCK.size):
            length, count, written = _BLOCK.unpack(head)
            offsets = array.array("q")
            offsets.frombytes(spool.read(count * offsets.itemsize))
            data = spool.read(length)
            if written < total:  # each row ends with the writer's "\r\n"
                text = data.decode("utf-8")
                pad = "," * (total - written) + "\r\n"
                start = 0
                pieces = []
                for end in offsets:
                    pieces.append(text[start:end - 2])
                    pieces.append(pad)
                    start = end
                data = "".join(pieces).encode("utf-8")
            parts.append(data)
            size += len(data)
            if size >= chunk:
                yield b"".join(parts)
                parts, size = [], 0
        yield b"".join(parts)


class _Appender:
    """A file for `csv.writer` that keeps each row it writes as one string (`write` is `list.append`)."""

    def __init__(self, lines: list[str]) -> None:
        self.write = lines.append


def _iter_csv(rows: Iterable[dict[str, Any]], chunk: int = 65536) -> Iterator[str]:
    """CSV of dict rows in one pass (`_CsvSpool`), as text; a row's shape is its field names."""
    with tempfile.TemporaryFile() as spool:
        out = _CsvSpool(spool, chunk)
        plans = out.plans
        for row in rows:
            names = tuple(row)
            plan = plans.get(names) or out.plan(names, names)
            out.write((out.place(plan, list(row.values())),))
        yield from (data.decode("utf-8") for data in out.out())


def _iter_csv_units(store: Store, job_id: int, statuses: list[str] | None, counter: list[int] | None,
                    chunk: int = 65536) -> Iterator[bytes]:
    """A job's CSV export as UTF-8, in one pass over the store's result pages: each unit's cells are
    made straight from its row tuple, in `unit_row`'s order, without the row dict.

    A row's shape (its item's field names, whether it has a process exit code, its `data` field names
    or kind) decides its cells' names, once per shape. A shape whose names would repeat (an item field
    named like a `data.*` column, or two fields renamed to the same `item.*`) goes through `unit_row`,
    whose dict keeps the last value at the first place. The JSON texts are decoded here; one holding
    no second `{` and no `[` has nothing nested, so its cells need no check for a dict or a list."""
    scan = _JSON_DECODER.scan_once  # type: ignore[attr-defined]
    with tempfile.TemporaryFile() as spool:
        out = _CsvSpool(spool, chunk)
        placings: dict[Hashable, list[Any]] = {}  # shape -> [plan, the width, its gather]
        slow: dict[Hashable, bool] = {}
        width = 0
        for page in store.units.result_pages(job_id, statuses, batch_size=PAGE):
            cached = [row[15] for row in page if row[15]]
            origins = store.cache.origins(cached) if cached else {}
            rows: list[Sequence[Any]] = []
            for record in page:
                (_, number, key, payload_text, status, output, data_text, error, error_class, cost, tokens_in,
                 tokens_out, attempt, started, finished, cached_from, exit_code, stdout, stderr) = record
                try:  # the column's json.loads without its frames and whitespace scans (none is stored)
                    payload, end = scan(payload_text, 0)
                except StopIteration:
                    end = -1
                if end != len(payload_text):
                    payload = json.loads(payload_text)
                nested = "[" in payload_text or payload_text.count("{") > 1
                if data_text is None:
                    data: Any = None
                else:
                    try:
                        data, end = scan(data_text, 0)
                    except StopIteration:
                        end = -1
                    if end != len(data_text):
                        data = json.loads(data_text)
                    nested = nested or "[" in data_text or data_text.count("{") > 1
                is_dict = type(data) is dict
                shape = (tuple(payload), exit_code is not None, tuple(data) if is_dict else data is None)
                placing = placings.get(shape)
                if placing is None:
                    names = _row_names(*shape)
                    if len(set(names)) < len(names):
                        slow[shape] = True
                        names = tuple(unit_row(_record(record, payload, data)))
                    if rows:  # a plan may add columns: the rows so far keep their own width
                        out.write(rows)
                        rows = []
                    placing = placings[shape] = [out.plan(shape, names), -1, None]
                    width = out.width
                if shape in slow:
                    values = list(unit_row(_record(record, payload, data), origins).values())
                else:
                    values = [number, key, *payload.values(), status, output, error, error_class, round(cost, 9),
                              tokens_in, tokens_out, attempt,
                              round(finished - started, 3) if finished and started else None,
                              cached_from_cell(origins.get(cached_from)) if cached_from else None]
                    if exit_code is not None:
                        values += (exit_code, stdout, stderr)
                    if is_dict:
                        values += data.values()
                    elif data is not None:
                        values.append(data)
                if placing[1] != width:  # the shape's first row at this width
                    placing[1:] = width, _gather(placing[0][0], len(values), width)
                gather = placing[2]
                if gather is not None:
                    values.append(None)  # the cell of the columns this row lacks
                    cells = gather(values)
                else:
                    cells = values
                if nested:
                    cells = list(cells)
                    for place in placing[0][1]:
                        value = cells[place]
                        if isinstance(value, (dict, list)):
                            cells[place] = _JSON_CELL.encode(value)
                rows.append(cells)
            out.write(rows)
            if counter is not None:
                counter[0] += len(page)
        yield from out.out()


def _gather(order: list[int] | None, count: int, width: int) -> Callable[[list[Any]], tuple[Any, ...]] | None:
    """Picks a row's `width` cells in column order out of its `count` values plus a None after them
    (one C call, not a Python loop over the cells); None when the values are the cells already."""
    if order is None and count == width:
        return None
    places = order if order is not None else list(range(count))
    slot = {column: index for index, column in enumerate(places)}
    picks = [slot.get(column, count) for column in range(width)]
    if len(picks) == 1:
        return lambda values: (values[picks[0]],)
    return operator.itemgetter(*picks)


def _record(row: tuple[Any, ...], payload: dict[str, Any], data: Any) -> ResultRecord:
    """A `result_pages` row as a `ResultRecord`, with its JSON columns decoded."""
    fields: list[Any] = [*row[:3], payload, *row[4:6], data, *row[7:]]
    return ResultRecord(*fields)


def _row_names(payload: tuple[str, ...], process: bool, data: tuple[str, ...] | bool) -> tuple[str, ...]:
    """The field names of `unit_row`'s row of this shape, before a repeated name would merge."""
    return ("unit", "key", *(f"item.{name}" if name in _OWN_COLUMNS else name for name in payload),
            *RESULT_COLUMNS[:10], *(PROCESS_COLUMNS if process else ()),
            *((f"data.{name}" for name in data) if isinstance(data, tuple) else () if data else ("data",)))


_JSON_DECODER = json.JSONDecoder()


def write_export(store: Store, job_id: int, fmt: str, path: Path, statuses: Iterable[str] | None = None) -> int:
    """Write an export to `path` atomically (temp file + rename). Returns the number of rows."""
    tmp = path.with_name(path.name + ".tmp")
    counter = [0]
    try:
        if fmt == "csv":  # its blocks are UTF-8 already
            with open(tmp, "wb") as binary:
                for data in _iter_csv_units(store, job_id, list(statuses) if statuses else None, counter):
                    binary.write(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                for chunk in iter_export(store, job_id, fmt, statuses, counter):
                    handle.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return counter[0]
