"""Worker kinds by name, imported lazily so `abp status` never pays for an SDK import."""

from __future__ import annotations

import importlib
from typing import Any

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import WorkerKind

_MODULES: dict[str, str] = {
    "claude": "agentic_batch.workers.claude",
    "command": "agentic_batch.workers.command",
    "python": "agentic_batch.workers.python_fn",
    "openai": "agentic_batch.workers.openai_chat",
    "anthropic": "agentic_batch.workers.anthropic_messages",
    "mcp": "agentic_batch.workers.mcp_call",
}


def worker_kinds() -> list[str]:
    return sorted(_MODULES)


def get_worker_kind(kind: str) -> WorkerKind[Any]:
    module_name = _MODULES.get(kind)
    if module_name is None:
        raise InvalidSpec(
            f"unknown worker kind {kind!r}", hint=f"choose one of: {', '.join(worker_kinds())}"
        )
    found: WorkerKind[Any] = importlib.import_module(module_name).KIND
    return found
