"""What every route needs from the app: the one Orchestrator and the server's config.

Routes call the Orchestrator and nothing below it: no SQL, no processes, no prompt rendering here.
"""

from __future__ import annotations

from fastapi import Request

from agentic_batch.service import Orchestrator
from agentic_batch.web.config import WebConfig


def orchestrator(request: Request) -> Orchestrator:
    orch: Orchestrator = request.app.state.orch
    return orch


def web_config(request: Request) -> WebConfig:
    config: WebConfig = request.app.state.config
    return config
