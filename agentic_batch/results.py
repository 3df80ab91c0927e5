"""Result rows: one flat dict per unit, shared by exports, the reduce step and every interface.

A row is the unit's number in the job (`unit`), its key, the item's fields, then status, output,
error, cost and attempts; a command unit's `exit_code`, `stdout` and `stderr`; for a unit the result
cache completed, `cached_from` (`JOB/UNIT`); structured output fields (a dict in `data`) become
`data.<field>` columns.
An item field whose name clashes with a result column is kept as `item.<name>`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agentic_batch.store import Store, UnitRecord
from agentic_batch.workers.pricing import usd

#: A process worker's exit code and streams, kept apart from `output` (columns of rows whose unit ran
#: a process: the `command` worker's units).
PROCESS_COLUMNS = ("exit_code", "stdout", "stderr")

RESULT_COLUMNS = ("status", "output", "error", "error_class", "cost_usd", "tokens_in", "tokens_out",
                  "attempts", "duration_s", "cached_from", *PROCESS_COLUMNS)


def cached_from_cell(origin: tuple[int, int] | None) -> str | None:
    """The `cached_from` column: `JOB/UNIT` of the unit a cached result came from (the one that ran)."""
    return f"{origin[0]}/{origin[1]}" if origin else None


def unit_row(unit: UnitRecord, origins: dict[int, tuple[int, int]] | None = None) -> dict[str, Any]:
    """A unit as a result row; `origins` (unit id -> job id, number) names where cached results came from."""
    row: dict[str, Any] = {"unit": unit.number, "key": unit.key}
    for name, value in unit.payload.items():
        column = f"item.{name}" if name in RESULT_COLUMNS or name in ("unit", "key") else name
        row[column] = value
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    row.update(status=unit.status, output=unit.output, error=unit.error, error_class=unit.error_class,
               cost_usd=usd(unit.cost_usd), tokens_in=unit.tokens_in, tokens_out=unit.tokens_out,
               attempts=unit.attempt, duration_s=round(duration, 3) if duration is not None else None,
               cached_from=cached_from_cell((origins or {}).get(unit.cached_from)) if unit.cached_from else None)
    if unit.exit_code is not None:
        row.update(exit_code=unit.exit_code, stdout=unit.stdout, stderr=unit.stderr)
    if isinstance(unit.data, dict):
        for name, value in unit.data.items():
            row[f"data.{name}"] = value
    elif unit.data is not None:
        row["data"] = unit.data
    return row


def iter_rows(store: Store, job_id: int, statuses: Iterable[str] | None = None,
              counter: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows in unit order; `counter[0]` (if given) counts them as they go."""
    records = store.units.iter_units(job_id, list(statuses) if statuses else None)
    while page := list(itertools.islice(records, 1000)):
        yield from unit_rows(store, page, counter)


def unit_rows(store: Store, page: list[UnitRecord], counter: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a page of units, the origins of its cached units looked up at once."""
    origins = store.cache.origins(u.cached_from for u in page if u.cached_from)
    for unit in page:
        if counter is not None:
            counter[0] += 1
        yield unit_row(unit, origins)


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def iter_export(store: Store, job_id: int, fmt: str, statuses: Iterable[str] | None = None,
                counter: list[int] | None = None) -> Iterator[str]:
    """Stream an export as text chunks: json (an array), jsonl, or csv."""
    statuses = list(statuses) if statuses else None
    if fmt not in ("json", "jsonl", "csv"):
        from agentic_batch.errors import InvalidSpec

        raise InvalidSpec(f"unknown export format {fmt!r}", hint="use json, jsonl or csv")
    if fmt == "jsonl":
        for row in iter_rows(store, job_id, statuses, counter):
            yield json.dumps(row, ensure_ascii=False, default=str) + "\n"
    elif fmt == "json":
        yield "["
        first = True
        for row in iter_rows(store, job_id, statuses, counter):
            yield ("\n" if first else ",\n") + json.dumps(row, ensure_ascii=False, default=str)
            first = False
        yield "\n]\n"
    elif fmt == "csv":
        yield from _iter_csv(iter_rows(store, job_id, statuses, counter))


def _iter_csv(rows: Iterable[dict[str, Any]], chunk: int = 65536) -> Iterator[str]:
    """CSV in one pass over the rows, in constant memory.

    The header is the union of every row's fields (item fields and `data.*` vary by row), known only
    at the end; reading the units twice (once for the names) doubled an export's store reads. So each
    row is written at once to a temporary file, with the columns known so far, as a record
    `<bytes> <columns>\n<csv line>`. Columns are only ever appended (first-seen order), so a row
    written before a later column appeared is completed by padding empty cells when the file is
    copied out after the header: the same bytes a two-pass DictWriter writes.
    """
    columns: dict[str, int] = {}
    line = io.StringIO()
    writer = csv.writer(line)
    with tempfile.TemporaryFile() as spool:
        for row in rows:
            for name in row:
                if name not in columns:
                    columns[name] = len(columns)
            cells = [""] * len(columns)
            for name, value in row.items():
                cells[columns[name]] = _cell(value)
            line.seek(0)
            line.truncate()
            writer.writerow(cells)
            data = line.getvalue().encode("utf-8")
            spool.write(b"%d %d\n" % (len(data), len(cells)))
            spool.write(data)
        spool.seek(0)
        line.seek(0)
        line.truncate()
        writer.writerow(list(columns))
        parts, size, total = [line.getvalue()], 0, len(columns)
        while header := spool.readline():
            length, count = map(int, header.split())
            text = spool.read(length).decode("utf-8")
            if count < total:  # ends with the writer's "\r\n"
                text = text[:-2] + "," * (total - count) + "\r\n"
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
