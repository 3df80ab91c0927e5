"""The web interface: REST API, Server-Sent Events and the dashboard (`abp serve`).

Needs the `web` extra (FastAPI, uvicorn). Like every interface it adapts the service layer
(`agentic_batch.service.Orchestrator`) and nothing below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """See `agentic_batch.web.app.create_app` (imported lazily: FastAPI is an optional extra)."""
    from agentic_batch.web.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
