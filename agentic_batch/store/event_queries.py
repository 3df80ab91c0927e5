"""Conversation events (`store.events`) and job logs (`store.logs`): appended in batches, read in
pages by increasing id. A row the store refuses is kept as a note in its place (`insert_rows`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from agentic_batch.store import LOG_LEVELS
from agentic_batch.store.db import Database, Queries
from agentic_batch.store.driver_sql import DriverStatement
from agentic_batch.store.records import EventRecord, LogRecord, NewEvent, from_mapping
from agentic_batch.store.schema import events, logs
from agentic_batch.store.storable import is_transient, rejection_reason, storable_text

log = logging.getLogger(__name__)


def _event_insert(dialect: str) -> sa.Insert:
    """The events INSERT with `data` bound as its JSON text (PostgreSQL casts it to its json column;
    SQLite stores the text, as SQLAlchemy's JSON type would)."""
    values: dict[str, Any] = {name: sa.bindparam(name)
                              for name in ("job_id", "unit_id", "attempt", "seq", "ts", "kind")}
    text = sa.bindparam("data", type_=sa.Text)
    values["data"] = sa.cast(text, events.c.data.type) if dialect == "postgresql" else text
    return sa.insert(events).values(values).inline()  # no RETURNING


_EVENT_INSERT = DriverStatement(_event_insert)


class EventQueries(Queries):
    """The events table: what each attempt's agent did, turn by turn."""

    def append_events(self, batch: Sequence[NewEvent]) -> None:
        """Insert events; an event the store refuses is kept as an error note in its place."""
        if not batch:
            return
        try:
            # the usual case, one driver-level executemany: SQLAlchemy's per-row parameter and JSON
            # processing cost more than SQLite's insert (an executor writes two events per unit)
            fast = [{"job_id": e.job_id, "unit_id": e.unit_id, "attempt": e.attempt, "seq": e.seq, "ts": e.ts,
                     "kind": storable_text(e.kind), "data": json.dumps(e.data)} for e in batch]
            with self.database.write() as conn:
                _EVENT_INSERT.executemany(conn, fast)
            return
        except Exception as exc:  # a value json cannot encode, a row the store refuses: row by row below
            if is_transient(exc):
                raise
        rows = [{"job_id": e.job_id, "unit_id": e.unit_id, "attempt": e.attempt, "seq": e.seq, "ts": e.ts,
                 "kind": storable_text(e.kind), "data": e.data} for e in batch]
        insert_rows(self.database, events, rows,
                    lambda row, why: {**row, "data": {"error": f"event not storable: {why}"}})

    def list_events(self, *, job_id: int | None = None, unit_id: int | None = None, after: int = 0,
                    limit: int = 500, attempt: int | None = None, reduce: bool = False) -> list[EventRecord]:
        """Events in id order after `after` (for incremental reads); `reduce` picks the reduce step's."""
        query = sa.select(events).where(events.c.id > after)
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        if reduce:
            query = query.where(events.c.unit_id.is_(None))
        elif unit_id is not None:
            query = query.where(events.c.unit_id == unit_id)
        if attempt is not None:
            query = query.where(events.c.attempt == attempt)
        with self.database.read() as conn:
            rows = conn.execute(query.order_by(events.c.id).limit(limit)).mappings()
            return [from_mapping(EventRecord, r) for r in rows]

    def latest_events(self, unit_ids: Sequence[int]) -> dict[int, EventRecord]:
        """The newest event of each unit (what each active agent is doing right now)."""
        if not unit_ids:
            return {}
        newest = (sa.select(sa.func.max(events.c.id)).where(events.c.unit_id.in_(list(unit_ids)))
                  .group_by(events.c.unit_id))
        with self.database.read() as conn:
            rows = conn.execute(sa.select(events).where(events.c.id.in_(newest.scalar_subquery()))).mappings()
            return {r["unit_id"]: from_mapping(EventRecord, r) for r in rows}


class LogQueries(Queries):
    """The logs table: a job's log lines, from its executors and from the interfaces."""

    def append_logs(self, batch: Sequence[dict[str, Any]]) -> None:
        """Each dict: job_id, level, message, and optionally unit_id, executor_id, extra, ts."""
        if not batch:
            return
        now = time.time()
        rows = [{"unit_id": None, "executor_id": None, "extra": None, "ts": now, **row} for row in batch]
        for row in rows:
            row["message"] = storable_text(str(row["message"]))
        insert_rows(self.database, logs, rows, lambda row, why: {**row, "extra": None,
                                                                 "message": f"log line not storable: {why}"})

    def list_logs(self, job_id: int, *, min_level: str = "debug", after: int = 0, limit: int = 500,
                  unit_id: int | None = None, text: str | None = None, newest_first: bool = False) -> list[LogRecord]:
        levels = LOG_LEVELS[LOG_LEVELS.index(min_level):] if min_level in LOG_LEVELS else LOG_LEVELS
        query = sa.select(logs).where(logs.c.job_id == job_id, logs.c.id > after, logs.c.level.in_(levels))
        if unit_id is not None:
            query = query.where(logs.c.unit_id == unit_id)
        if text:
            query = query.where(logs.c.message.contains(text, autoescape=True))
        query = query.order_by(logs.c.id.desc() if newest_first else logs.c.id).limit(limit)
        with self.database.read() as conn:
            return [from_mapping(LogRecord, r) for r in conn.execute(query).mappings()]


def insert_rows(database: Database, table: sa.Table, rows: list[dict[str, Any]],
                stand_in: Callable[[dict[str, Any], str], dict[str, Any]]) -> None:
    """Insert in one transaction; if the store refuses a row (not an outage), insert row by row
    and put `stand_in(row, reason)` in place of each refused one (dropped if refused too)."""
    try:
        with database.write() as conn:
            conn.execute(sa.insert(table), rows)
        return
    except Exception as exc:
        if is_transient(exc) or len(rows) == 0:
            raise
    for row in rows:
        try:
            with database.write() as conn:
                conn.execute(sa.insert(table), [row])
            continue
        except Exception as exc:
            if is_transient(exc):
                raise
            why = rejection_reason(exc)
        log.warning("the store refused a %s row (%s); storing a note instead", table.name, why)
        try:
            with database.write() as conn:
                conn.execute(sa.insert(table), [stand_in(row, why)])
        except Exception as exc:
            if is_transient(exc):
                raise
