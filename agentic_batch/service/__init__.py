"""The service layer (Orchestrator): the only API every interface (CLI, REST, MCP, dashboard) calls.

Methods are synchronous and may block (a test run executes an agent); async interfaces call them in
a worker thread. Every user-facing failure is an `AbpError` subclass.
"""

from agentic_batch.service.orchestrator import Orchestrator

__all__ = ["Orchestrator"]
