"""Workers: one module per agent kind behind one small protocol (see `base`).

The names below are loaded on first use: a light submodule (`pricing`, used by every export) must not
pull the worker protocol's models and the registry into `abp list`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {"ErrorClass": "base", "PermanentError": "base", "ProcessTracker": "base", "RetryableError": "base",
          "UnitContext": "base", "UnitOutcome": "base", "Worker": "base", "WorkerKind": "base",
          "get_worker_kind": "registry", "worker_kinds": "registry"}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
