"""The FastAPI app behind `abp serve`: the REST API under /api, live streams, the dashboard at /,
and a readable API reference at /docs (rendered here from the OpenAPI document, so nothing is
fetched from a CDN; the machine-readable document is /openapi.json).

One app, one Orchestrator: every route is a thin adapter over the service layer, like the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from agentic_batch import __version__
from agentic_batch.service import Orchestrator
from agentic_batch.web import api_changes, api_jobs, api_misc, api_units, errors, openapi_doc, pages, sse
from agentic_batch.web.config import WebConfig
from agentic_batch.web.security import Guard, Sessions

HERE = Path(__file__).resolve().parent
DESCRIPTION = """\
The REST API of agentic-batch: every call goes through the same service layer as the `abp` CLI.

* Errors are JSON `{"error": message, "hint": hint}`: 404 unknown job or unit, 409 a state change
  the job's status does not allow, 422 a bad spec or parameter, 400 a body that is not JSON.
* With a token (`abp serve --token` or `ABP_API_TOKEN`), send `Authorization: Bearer <token>`.
* Requests that change something must not come from another site: send them with
  `Content-Type: application/json` (or a Bearer token, or the dashboard's `X-ABP-CSRF` header).
* Live updates: `GET /api/jobs/{job}/stream` and `GET /api/stream` are Server-Sent Events.
"""


def create_app(orch: Orchestrator | None = None, config: WebConfig | None = None) -> FastAPI:
    """Build the app; `orch` defaults to one over the store named by the environment."""
    config = config or WebConfig()
    app = FastAPI(title="agentic-batch", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.orch = orch or Orchestrator()
    app.state.config = config
    app.state.sessions = Sessions()
    app.state.open_streams = 0
    app.state.stream_stop = sse.StreamStop()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["version"] = __version__
    app.state.templates = templates
    errors.install(app)
    routers = (api_jobs.router, api_units.router, api_changes.router, api_misc.router, sse.router, pages.router)
    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(Guard, config=config, sessions=app.state.sessions,
                       routes=[route for router in routers for route in router.routes])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            api_jobs.register_schemas(schema)
            openapi_doc.document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
