"""Deleting a job's rows in short transactions, so a 100,000-unit job goes without stalling the others.

One `DELETE ... WHERE job_id = ?` of a big job holds SQLite's one write lock for seconds (every other
executor's claim and result write waits behind it) and on PostgreSQL makes one huge transaction. Here
each table is emptied in batches of rows picked by primary key, each batch its own write transaction;
the batch size adapts to what the last batch took, aiming at `TARGET_SECONDS` per transaction. On
SQLite the deleter then stays out of the lock for as long as it held it, because a writer waiting in
SQLite's busy handler polls with growing sleeps and would otherwise find the lock taken again every
time (on PostgreSQL other jobs' rows are never locked by this, so it does not pause).

Every table with a `job_id` column is covered, dependents first, so a table a later migration adds is
deleted too without a line here; the `jobs` row goes last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from agentic_batch.store.db import Queries
from agentic_batch.store.schema import jobs, metadata

#: Aimed-at duration of one delete transaction (the write lock's hold on SQLite).
TARGET_SECONDS = 0.03
FIRST_BATCH = 500
MIN_BATCH, MAX_BATCH = 50, 20_000


@dataclass(frozen=True)
class DeletedBatch:
    """One delete transaction: which table, how many rows, how long it held the write transaction."""

    table: str
    rows: int
    seconds: float


def job_tables() -> list[sa.Table]:
    """Tables holding a job's rows, dependents before what they reference."""
    return [t for t in reversed(metadata.sorted_tables) if t is not jobs and "job_id" in t.c]


class JobDeletion(Queries):
    """`store.deletion`: a job's rows, batch by batch."""

    def count_rows(self, job_id: int) -> dict[str, int]:
        with self.database.read() as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                             .where(t.c.job_id == job_id)).scalar_one())
                    for t in job_tables()}

    def delete_batch(self, table: sa.Table, job_id: int, limit: int) -> tuple[int, float]:
        """Delete up to `limit` of the job's rows of `table` in one write transaction; returns the rows
        and how long the transaction held the store (from when its BEGIN returned, on SQLite holding the
        write lock, to the end of its COMMIT)."""
        key = next(iter(table.primary_key.columns))
        picked = sa.select(key).where(table.c.job_id == job_id).limit(limit).scalar_subquery()
        with self.database.write() as conn:
            began = time.perf_counter()
            rows = int(conn.execute(sa.delete(table).where(key.in_(picked))).rowcount or 0)
        return rows, time.perf_counter() - began

    def delete_job(self, job_id: int, on_batch: Callable[[DeletedBatch], None] | None = None,
                   target_seconds: float = TARGET_SECONDS) -> int:
        """Every row of the job, in batches; returns how many rows were deleted (the job's own included).
        `on_batch` sees each transaction (the benchmark measures them)."""
        pause = self.database.is_sqlite
        size = FIRST_BATCH
        total = 0
        for table in job_tables():
            while True:
                rows, took = self.delete_batch(table, job_id, size)
                total += rows
                if on_batch is not None:
                    on_batch(DeletedBatch(table.name, rows, took))
                if rows < size:
                    break
                if pause:
                    time.sleep(took)
                # aim the next batch at the target, moving at most 2x per step (one slow batch is noise)
                scale = min(2.0, max(0.5, target_seconds / max(took, 1e-4)))
                size = max(MIN_BATCH, min(MAX_BATCH, int(size * scale)))
        with self.database.write() as conn:
            total += int(conn.execute(sa.delete(jobs).where(jobs.c.id == job_id)).rowcount or 0)
        return total
