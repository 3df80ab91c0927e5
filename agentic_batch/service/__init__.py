"""The service layer (Orchestrator): the only API every interface (CLI, REST, MCP, dashboard) calls.

Methods are synchronous and may block (a test run executes an agent); async interfaces call them in
a worker thread. Every user-facing failure is an `AbpError` subclass.

`Orchestrator` is imported on first use, not with the package: `agentic_batch.service.models` (what
the CLI prints) must not drag the whole service (creation, test runs, the engine) into `abp list`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentic_batch.service.orchestrator import Orchestrator

__all__ = ["Orchestrator"]


def __getattr__(name: str) -> Any:
    if name == "Orchestrator":
        from agentic_batch.service.orchestrator import Orchestrator

        return Orchestrator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
