"""The store: the only module that talks SQL. Every process (CLI, executor, web, MCP) opens one.

`Store` is a facade over small query mixins, one per table family, all sharing `StoreBase`'s
connection handling. `open_store()` applies migrations on first use.
"""

from __future__ import annotations

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


class Store(JobQueries, UnitQueries, EventQueries, ExecutorQueries, BrowseQueries, NotifyQueries, StoreBase):
    """All store queries behind one object. Thread-safe: each call takes its own connection."""


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
