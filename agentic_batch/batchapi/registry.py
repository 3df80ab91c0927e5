"""Which worker kinds have a batch API, and the provider for each: one entry per provider module.

A provider module exposes `build(options) -> BatchProvider`, taking the worker's parsed options (the
same model, key and sampling options the online worker uses). Imported lazily, like the workers.
"""

from __future__ import annotations

import importlib
from typing import Any

from agentic_batch.batchapi.provider import BatchProvider
from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.registry import get_worker_kind

_PROVIDERS: dict[str, str] = {
    "openai": "agentic_batch.batchapi.openai_batch",
    "anthropic": "agentic_batch.batchapi.anthropic_batch",
}


def batch_kinds() -> list[str]:
    """Worker kinds that can run with `batch_api`."""
    return sorted(_PROVIDERS)


def build_provider(worker: str, worker_options: dict[str, Any]) -> BatchProvider:
    """The batch provider of a job's worker kind, configured from the job's worker options."""
    module_name = _PROVIDERS.get(worker)
    if module_name is None:
        raise InvalidSpec(f"the {worker} worker has no batch API",
                          hint=f"batch_api works with: {', '.join(batch_kinds())}")
    options = get_worker_kind(worker).parse_options(worker_options)
    provider: BatchProvider = importlib.import_module(module_name).build(options)
    return provider
