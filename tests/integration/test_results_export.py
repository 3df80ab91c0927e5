"""Exports read each unit once (CSV included) and write costs without float noise.

A CSV header is the union of every row's fields, so the CSV export used to read the whole job twice
(once for the column names): 40,002 row reads for 20,000 units. The store's engine counts the
statements that read units here; the CSV must match what a two-pass writer produces, byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentic_batch.service import Orchestrator
from agentic_batch.store import NewUnit
from agentic_batch.store.schema import units

N = 2_500  # three pages of the store's 1,000-unit keyset reads


@pytest.fixture
def job(orch: Orchestrator, workdir: Path) -> int:
    """One real job, then N units in bulk whose fields vary: a field that appears only in the last
    unit, `data` dicts on some, costs whose float sum is noisy."""
    (workdir / "one.jsonl").write_text('{"name": "first"}\n')
    job_id = orch.create({"name": "export", "source": {"kind": "jsonl", "path": "one.jsonl"},
                          "worker": "command", "worker_options": {"command": "echo {{ name }}"}},
                         cwd=workdir).job_id
    orch.store.units.insert_units(job_id, [
        NewUnit(seq=i, key=f"k{i}", payload={"name": f"n{i}", "text": "line1\nline2, \"quoted\""}
                | ({"late": "only in the last row"} if i == N else {})) for i in range(1, N + 1)])
    with orch.store.database.write() as conn:
        conn.execute(sa.update(units).where(units.c.job_id == job_id, units.c.seq % 2 == 0).values(
            status="COMPLETED", output="out", cost_usd=0.0001 + 0.00018, data={"label": "x", "score": 3}))
        conn.execute(sa.update(units).where(units.c.job_id == job_id, units.c.seq == 3).values(
            status="COMPLETED", cost_usd=1.5e-07))  # 10 input tokens of a $0.015/M model
        conn.execute(sa.update(units).where(units.c.job_id == job_id, units.c.seq == 7).values(
            data={"only_seven": True}))
    return job_id


class UnitReads:
    """Counts the SELECT statements that read the units table on the store's SQLite connections.

    Counted by the driver (sqlite3's trace callback on every connection opened while counting), not by
    SQLAlchemy's events: the CSV export runs its compiled statement on the driver's cursor, which
    SQLAlchemy never sees."""

    def __init__(self, engine: sa.Engine) -> None:
        assert engine.dialect.name == "sqlite", "counts sqlite3's statements"
        self.engine, self.count = engine, 0

    def _trace(self, statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM units" in statement:
            self.count += 1

    def _on_connect(self, dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.set_trace_callback(self._trace)

    def __enter__(self) -> UnitReads:
        self.engine.dispose()  # pooled connections were opened untraced
        sa.event.listen(self.engine, "connect", self._on_connect)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "connect", self._on_connect)
        self.engine.dispose()


def _drain(chunks: Iterator[str]) -> str:
    return "".join(chunks)


def _two_pass_csv(rows: list[dict]) -> str:  # type: ignore[type-arg]
    """What the CSV export wrote before: DictWriter over the union of the columns, first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else "" if v is None else v
                         for k, v in row.items()})
    return buffer.getvalue()


def test_csv_export_reads_every_unit_once(orch: Orchestrator, job: int) -> None:
    job_id = job
    with UnitReads(orch.store.database.engine) as jsonl_reads:
        _drain(orch.export(job_id, "jsonl"))
    with UnitReads(orch.store.database.engine) as csv_reads:
        text = _drain(orch.export(job_id, "csv"))
    pages = -(-(N + 1) // 1000)
    assert csv_reads.count >= 1  # the reads are seen (the driver counts them)
    assert jsonl_reads.count == csv_reads.count  # one pass, like jsonl (two passes made it 2x)
    assert csv_reads.count <= pages + 2  # + the job lookup reads (none of them read units)

    rows = orch.results(job_id)
    assert text == _two_pass_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == N + 1
    assert parsed[-1]["late"] == "only in the last row" and parsed[0]["late"] == ""  # padded
    assert parsed[7]["data.only_seven"] == "True" and parsed[2]["data.label"] == "x"
    assert parsed[1]["text"] == "line1\nline2, \"quoted\""


def test_export_to_file_is_the_same_single_pass(orch: Orchestrator, job: int, workdir: Path) -> None:
    with UnitReads(orch.store.database.engine) as reads:
        info = orch.export_to(job, workdir / "out.csv")
    assert info.rows == N + 1 and 1 <= reads.count <= -(-(N + 1) // 1000) + 2
    assert (workdir / "out.csv").read_bytes().decode() == _drain(orch.export(job, "csv"))


def test_costs_are_exported_without_float_noise_or_lost_precision(orch: Orchestrator, job: int) -> None:
    assert 0.0001 + 0.00018 == 0.00028000000000000003  # the noise is real
    rows = [json.loads(line) for line in _drain(orch.export(job, "jsonl")).splitlines()]
    costs = {r["key"]: r["cost_usd"] for r in rows}
    assert costs["k2"] == 0.00028 and costs["k3"] == 1.5e-07 and costs["k1"] == 0  # not rounded to 0.0
    text = _drain(orch.export(job, "csv"))
    assert ",0.00028," in text and ",1.5e-07," in text and "00000000003" not in text
