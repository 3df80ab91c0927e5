"""The store: the only module that talks SQL. Every process (CLI, executor, web, MCP) opens one.

`Store` is a facade over small query mixins, one per table family, all sharing `StoreBase`'s
connection handling. `open_store()` applies migrations on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agentic_batch.store.browse_queries import BrowseQueries
from agentic_batch.store.db import SCHEMA_REVISION, StoreBase, make_engine
from agentic_batch.store.event_queries import LOG_LEVELS, EventQueries
from agentic_batch.store.executor_queries import ExecutorQueries
from agentic_batch.store.job_queries import JobQueries
from agentic_batch.store.notify import Listener, NotifyQueries
from agentic_batch.store.records import (
    EventRecord,
    ExecutorRecord,
    JobRecord,
    LogRecord,
    NewEvent,
    NewUnit,
    UnitRecord,
    UnitResult,
)
from agentic_batch.store.unit_queries import UNIT_STATUSES, UnitQueries

T = TypeVar("T")


class Store(JobQueries, UnitQueries, EventQueries, ExecutorQueries, BrowseQueries, NotifyQueries, StoreBase):
    """All store queries behind one object. Thread-safe: each call takes its own connection."""

    def write_batch(self, owner: str, events: Sequence[NewEvent], results: Sequence[UnitResult],
                    logs: Sequence[dict[str, Any]], then: Callable[[], T] | None = None) -> tuple[list[int], T | None]:
        """An executor's buffered writes in ONE transaction: events (before the results they explain),
        results (fenced, as `apply_results`), logs, then `then()` (the pool's claim). A finished unit
        leaves RUNNING in the same transaction that claims a unit for its slot, so the job's RUNNING
        count never exceeds its concurrency, at the cost of one transaction, not two.
        Returns the ids whose result was applied and what `then` returned."""
        with self.write():
            if events:
                self.append_events(events)
            applied = self.apply_results(owner, results) if results else []
            if logs:
                self.append_logs(logs)
            return applied, then() if then is not None else None


def open_store(url: str | None = None) -> Store:
    """Open (and on first use create/migrate) the store at `url`, default from the environment."""
    if url is None:
        from agentic_batch.config import load_settings

        url = load_settings().db_url
    store = Store(url)
    store.migrate()
    return store


__all__ = [
    "LOG_LEVELS",
    "Listener",
    "SCHEMA_REVISION",
    "UNIT_STATUSES",
    "EventRecord",
    "ExecutorRecord",
    "JobRecord",
    "LogRecord",
    "NewEvent",
    "NewUnit",
    "Store",
    "UnitRecord",
    "UnitResult",
    "make_engine",
    "open_store",
]
