"""Workers: one module per agent kind behind one small protocol (see `base`)."""

from agentic_batch.workers.base import (
    ErrorClass,
    PermanentError,
    ProcessTracker,
    RetryableError,
    UnitContext,
    UnitOutcome,
    Worker,
    WorkerKind,
)
from agentic_batch.workers.registry import get_worker_kind, worker_kinds

__all__ = [
    "ErrorClass",
    "PermanentError",
    "ProcessTracker",
    "RetryableError",
    "UnitContext",
    "UnitOutcome",
    "Worker",
    "WorkerKind",
    "get_worker_kind",
    "worker_kinds",
]
