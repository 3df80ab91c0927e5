"""What every route needs from the app: the one Orchestrator and the server's config.

Routes call the Orchestrator and nothing below it: no SQL, no processes, no prompt rendering here.
"""

from __future__ import annotations

from fastapi import Request

from agentic_batch.service import Orchestrator
from agentic_batch.web.config import WebConfig


def orchestrator(request: Request) -> Orchestrator:
    return request.app.state.orch  # type: ignore[no-any-return]


def web_config(request: Request) -> WebConfig:
    return request.app.state.config  # type: ignore[no-any-return]
