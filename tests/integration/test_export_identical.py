"""Exports are byte for byte what the former export wrote, on both stores, for a job that mixes
everything a row can hold: completed, failed and cached units, NUL and emoji in item fields, a command
unit's stdout with newlines, `data` as a dict, a list and a scalar, item fields named like result
columns, and a column that first appears after thousands of rows (several store pages and CSV blocks).

The reference below is the export as it was before it read units through `iter_results` and placed
CSV cells by plan: the former `unit_row` over whole `UnitRecord`s, a two-pass DictWriter, and
`json.dumps` per JSON line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentic_batch.results import RESULT_COLUMNS, _iter_csv, cached_from_cell, iter_export, write_export
from agentic_batch.store import NewUnit, UnitRecord
from agentic_batch.store.schema import units
from agentic_batch.workers.pricing import usd
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)

N = 4_500  # past two 2,000-unit store pages; the CSV spans many 64 KiB blocks


def _former_row(unit: UnitRecord, origins: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """`results.unit_row` as it was."""
    row: dict[str, Any] = {"unit": unit.number, "key": unit.key}
    for name, value in unit.payload.items():
        column = f"item.{name}" if name in RESULT_COLUMNS or name in ("unit", "key") else name
        row[column] = value
    duration = (unit.finished_at - unit.started_at) if unit.finished_at and unit.started_at else None
    row.update(status=unit.status, output=unit.output, error=unit.error, error_class=unit.error_class,
               cost_usd=usd(unit.cost_usd), tokens_in=unit.tokens_in, tokens_out=unit.tokens_out,
               attempts=unit.attempt, duration_s=round(duration, 3) if duration is not None else None,
               cached_from=cached_from_cell(origins.get(unit.cached_from)) if unit.cached_from else None)
    if unit.exit_code is not None:
        row.update(exit_code=unit.exit_code, stdout=unit.stdout, stderr=unit.stderr)
    if isinstance(unit.data, dict):
        for name, value in unit.data.items():
            row[f"data.{name}"] = value
    elif unit.data is not None:
        row["data"] = unit.data
    return row


def _former_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def _former_rows(orch: Any, job_id: int, statuses: list[str] | None = None) -> list[dict[str, Any]]:
    records = list(orch.store.units.iter_units(job_id, statuses))
    origins = orch.store.cache.origins(u.cached_from for u in records if u.cached_from)
    return [_former_row(u, origins) for u in records]


def _former_csv(rows: list[dict[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _former_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _former_export(orch: Any, job_id: int, fmt: str, statuses: list[str] | None = None) -> str:
    rows = _former_rows(orch, job_id, statuses)
    if fmt == "csv":
        return _former_csv(rows)
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    return "[" + "".join(("\n" if i == 0 else ",\n") + json.dumps(row, ensure_ascii=False, default=str)
                         for i, row in enumerate(rows)) + "\n]\n"


@pytest.fixture
def mixed_job(orch: Any, workdir: Path) -> int:
    # An earlier job whose unit the cached units copied from.
    (workdir / "origin.jsonl").write_text('{"title": "origin"}\n')
    origin = orch.create({"name": "origin", "source": {"kind": "jsonl", "path": "origin.jsonl"},
                          "worker": "command", "worker_options": {"command": "echo {{ title }}"}}, cwd=workdir)
    origin_unit = orch.store.units.iter_units(origin.job_id).__next__().id
    # The job, created from a real source with NUL, emoji and clashing field names...
    items = [{"title": "emoji 😀 𝄞 한국어", "status": "item's own status", "unit": 7, "data.label": "item field",
              "nested": {"list": [1, 2.5, None, True, "x"], "quote": 'say "hi", then\nleave'}},
             {"title": "a\x00b", "key": "k\x00", "data": "item data field"}]
    (workdir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    job_id = orch.create({"name": "mixed", "source": {"kind": "jsonl", "path": "items.jsonl"},
                          "worker": "command", "worker_options": {"command": "echo {{ title }}"}},
                         cwd=workdir).job_id
    # ...then thousands more in bulk, one with a field no earlier unit has.
    orch.store.units.insert_units(job_id, [
        NewUnit(seq=i, key=f"k{i}", payload={"title": f"item {i}", "body": "lorem, ipsum\r\n\"dolor\"" * (i % 3)}
                | ({"late": "only here ✓"} if i == N - 10 else {}))
        for i in range(2, N)])
    with orch.store.database.write() as conn:
        def update(where: Any, **values: Any) -> None:
            conn.execute(sa.update(units).where(units.c.job_id == job_id, where).values(**values))

        update(units.c.seq % 3 == 0, status="COMPLETED", output="out, with a comma", cost_usd=0.0001 + 0.00018,
               tokens_in=812, tokens_out=95, attempt=1, started_at=1000.0, finished_at=1001.23456,
               data={"label": "ok", "score": 0.5, "tags": ["a", "b"]})
        update(units.c.seq % 3 == 1, status="FAILED", error="exit 1: boom\nsecond line", error_class="permanent",
               attempt=3, started_at=1000.0, finished_at=1000.5)
        update(units.c.seq % 7 == 0, exit_code=0, stdout="line 1\nline 2\r\n\n", stderr="")
        update(units.c.seq % 11 == 0, exit_code=-9, stdout=None, stderr="killed ✗")
        update(units.c.seq % 13 == 0, status="COMPLETED", cached_from=origin_unit, output="copied", attempt=0)
        update(units.c.seq == 0, status="COMPLETED", data=["a list", {"in": "it"}], output="😀")
        update(units.c.seq == 1, status="COMPLETED", data="a scalar with a NUL \x00", output="\ufffd")
        update(units.c.seq == 5, data={"label": "data wins over the item's data.label"})
        update(units.c.seq == N - 5, data={"late_data": {"deep": [1, 2]}})
    return job_id


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_export_is_byte_identical_to_the_former_export(orch: Any, mixed_job: int, fmt: str) -> None:
    expected = _former_export(orch, mixed_job, fmt)
    assert "".join(iter_export(orch.store, mixed_job, fmt)) == expected
    assert "only here ✓" in expected and "copied" in expected and "😀" in expected
    if fmt == "csv":
        assert '"line 1\nline 2\r\n\n"' in expected
        header = expected.split("\r\n", 1)[0].split(",")
        assert header[-3:] == ["data.tags", "late", "data.late_data"]  # padded rows: the late columns


def test_a_status_filtered_export_and_the_file_are_identical_too(orch: Any, mixed_job: int, workdir: Path) -> None:
    for fmt in ("csv", "jsonl"):
        expected = _former_export(orch, mixed_job, fmt, ["FAILED", "COMPLETED"])
        assert "".join(iter_export(orch.store, mixed_job, fmt, ["FAILED", "COMPLETED"])) == expected
        path = workdir / f"out.{fmt}"
        rows = write_export(orch.store, mixed_job, fmt, path)
        assert rows == N
        assert path.read_bytes().decode("utf-8") == _former_export(orch, mixed_job, fmt)


@pytest.mark.parametrize("chunk", [1, 50, 300, 65536])
def test_csv_blocks_pad_rows_written_before_a_column_appeared(chunk: int) -> None:
    """Rows whose fields come and go, in every order, written in blocks of any size."""
    rows: list[dict[str, Any]] = []
    for i in range(400):
        row: dict[str, Any] = {"unit": i, "key": f"k{i}"}
        if i % 2:
            row["odd"] = f"o,{i}\n"
        if i % 5 == 0:
            row["fifth"] = {"n": i}
        if i > 300:
            row["late"] = [i, "x"]
        if i % 7 == 0:
            row = dict(reversed(list(row.items())))
        rows.append(row)
    assert "".join(_iter_csv(iter(rows), chunk=chunk)) == _former_csv(rows)
    assert "".join(_iter_csv(iter([]), chunk=chunk)) == _former_csv([]) == "\r\n"
