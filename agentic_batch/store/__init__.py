"""The store: the only module that talks SQL. Every process (CLI, executor, web, MCP) opens one.

`Store` is one `Database` (engine, transactions, migrations) and a query object per table family
over it: `store.jobs`, `store.units`, `store.events`, `store.logs`, `store.executors`, `store.browse`
(reads for the interfaces), `store.review` (isolated units' changes and review marks),
`store.deletion` (a job's rows, in short transactions), `store.batches` (provider batches of
`--batch-api` jobs), `store.errors` (failed units grouped by cause), `store.cache` (the result cache's
fingerprints and copies) and `store.changes` (PostgreSQL notifications). They share the database's
connections, and a write transaction open on a thread joins them (`Store.write_batch`).
`open_store()` applies migrations on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agentic_batch.store.records import (
    BatchRecord,
    EventRecord,
    ExecutorRecord,
    JobRecord,
    LogRecord,
    NewEvent,
    NewUnit,
    UnitRecord,
    UnitResult,
)
from agentic_batch.store.revision import SCHEMA_REVISION
from agentic_batch.states import UnitStatus

if TYPE_CHECKING:  # SQLAlchemy is imported when a store is opened, not with the package (see __getattr__)
    from agentic_batch.store.cache_queries import CacheHit, Fingerprinted
    from agentic_batch.store.db import Database, make_engine
    from agentic_batch.store.notify import Listener

T = TypeVar("T")

#: The unit states, in the order views list them (also `unit_queries.UNIT_STATUSES`).
UNIT_STATUSES = tuple(UnitStatus)
#: Log levels, least severe first.
LOG_LEVELS = ("debug", "info", "warning", "error")

#: Names whose modules import SQLAlchemy: loaded on first use, so `agentic_batch.store.records` and the
#: CLI's direct reads (`store.direct`) import without it.
_LAZY = {"CacheHit": "cache_queries", "Fingerprinted": "cache_queries", "Database": "db", "make_engine": "db",
         "Listener": "notify"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"agentic_batch.store.{module}"), name)


class Store:
    """All store queries behind one object. Thread-safe: each call takes its own connection."""

    def __init__(self, url: str) -> None:
        from agentic_batch.store.batch_queries import BatchQueries
        from agentic_batch.store.browse_queries import BrowseQueries
        from agentic_batch.store.cache_queries import CacheQueries
        from agentic_batch.store.db import Database
        from agentic_batch.store.error_queries import ErrorQueries
        from agentic_batch.store.event_queries import EventQueries, LogQueries
        from agentic_batch.store.executor_queries import ExecutorQueries
        from agentic_batch.store.job_deletion import JobDeletion
        from agentic_batch.store.job_queries import JobQueries
        from agentic_batch.store.notify import Changes
        from agentic_batch.store.review_queries import ReviewQueries
        from agentic_batch.store.unit_queries import UnitQueries

        self.database = Database(url)
        self.jobs = JobQueries(self.database)
        self.units = UnitQueries(self.database)
        self.events = EventQueries(self.database)
        self.logs = LogQueries(self.database)
        self.executors = ExecutorQueries(self.database)
        self.browse = BrowseQueries(self.database)
        self.review = ReviewQueries(self.database)
        self.deletion = JobDeletion(self.database)
        self.batches = BatchQueries(self.database)
        self.errors = ErrorQueries(self.database)
        self.cache = CacheQueries(self.database)
        self.changes = Changes(self.database)

    @property
    def url(self) -> str:
        return self.database.url

    def close(self) -> None:
        self.database.close()

    def write_batch(self, owner: str, events: Sequence[NewEvent], results: Sequence[UnitResult],
                    logs: Sequence[dict[str, Any]], then: Callable[[], T] | None = None,
                    notify: int | None = None) -> tuple[list[int], T | None]:
        """An executor's buffered writes in ONE transaction: events (before the results they explain),
        results (fenced, as `apply_results`), logs, then `then()` (the pool's claim). A finished unit
        leaves RUNNING in the same transaction that claims a unit for its slot, so the job's RUNNING
        count never exceeds its concurrency, at the cost of one transaction, not two.
        `notify` (a job id): tell listeners (PostgreSQL) its units changed, sent when this commits.
        Returns the ids whose result was applied and what `then` returned.

        Written first without savepoints (`Database.optimistic`); a batch with a row the store refuses
        is rolled back whole and written again with them, where the refused row is found and set aside."""
        from agentic_batch.store.db import CarefulRetry

        try:
            with self.database.optimistic():
                return self._write_batch(owner, events, results, logs, then, notify)
        except CarefulRetry:
            return self._write_batch(owner, events, results, logs, then, notify)

    def _write_batch(self, owner: str, events: Sequence[NewEvent], results: Sequence[UnitResult],
                     logs: Sequence[dict[str, Any]], then: Callable[[], T] | None,
                     notify: int | None) -> tuple[list[int], T | None]:
        with self.database.write():
            if events:
                self.events.append_events(events)
            applied = self.units.apply_results(owner, results) if results else []
            if logs:
                self.logs.append_logs(logs)
            if notify is not None and (events or results or logs):
                self.changes.notify(notify, "units")
            return applied, then() if then is not None else None


def open_store(url: str | None = None) -> Store:
    """Open (and on first use create/migrate) the store at `url`, default from the environment."""
    if url is None:
        from agentic_batch.config import load_settings

        url = load_settings().db_url
    store = Store(url)
    store.database.migrate()
    return store


__all__ = [
    "LOG_LEVELS",
    "BatchRecord",
    "SCHEMA_REVISION",
    "UNIT_STATUSES",
    "CacheHit",
    "Database",
    "EventRecord",
    "ExecutorRecord",
    "Fingerprinted",
    "JobRecord",
    "Listener",
    "LogRecord",
    "NewEvent",
    "NewUnit",
    "Store",
    "UnitRecord",
    "UnitResult",
    "make_engine",
    "open_store",
]
