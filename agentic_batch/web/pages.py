"""The dashboard's pages, server-rendered with Jinja2 (autoescaped): job list, job, unit, the API
reference, and the login page used when the server has a token.

Each page renders its frame and static facts, and embeds its first data as JSON (`tojson` escapes
`<`, `>` and `&`, so agent text cannot close the script element); the page's JS draws the live parts
from the same JSON the REST API returns, then follows the SSE stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from agentic_batch.service.models import plain
from agentic_batch.web.deps import orchestrator, web_config
from agentic_batch.web.security import SESSION_COOKIE, SESSION_SECONDS, safe_next, same_secret
from agentic_batch.states import JobStatus

router = APIRouter(include_in_schema=False)
UNITS_PAGE = 50


def _render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    config = web_config(request)
    context.setdefault("title", "agentic-batch")
    context.update(csrf=request.state.csrf_token, logged_in=bool(config.token) and
                   request.cookies.get(SESSION_COOKIE) is not None)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)


@router.get("/")
async def jobs_page(request: Request, status: str | None = None, q: str | None = None) -> Response:
    orch = orchestrator(request)

    def load() -> dict[str, Any]:
        return {"jobs": plain(orch.jobs_page(status=status, search=q, limit=50)), "stats": plain(orch.stats()),
                "filter": {"status": status or "", "q": q or ""}}

    data = await run_in_threadpool(load)
    return _render(request, "jobs.html", title="Jobs", data=data, status_filter=(status or "").lower(), q=q or "")


@router.get("/jobs/{job}")
async def job_page(request: Request, job: str) -> Response:
    orch = orchestrator(request)

    def load() -> dict[str, Any]:
        record = orch.job(job)
        status = orch.status(record.id)
        test = orch.test_report(record.id) if record.status == JobStatus.TESTING and record.test_unit_id else None
        return {"record": record, **plain({
            "status": status, "test": test, "units": orch.units_page(record.id, limit=UNITS_PAGE),
            "active": orch.active_units(record.id), "logs": orch.logs_page(record.id, limit=50),
            "series": orch.timeseries(record.id), "errors": orch.error_summary(record.id)})}

    data = await run_in_threadpool(load)
    record = data.pop("record")
    data["job"] = {"id": record.id, "name": record.name, "prompt_template": record.prompt_template,
                   "worker": record.worker}
    return _render(request, "job.html", title=record.name, record=record, data=data,
                   source=json.dumps(record.source, indent=2, ensure_ascii=False),
                   worker_options=json.dumps(record.worker_options, indent=2, ensure_ascii=False))


@router.get("/jobs/{job}/units/{unit}")
async def unit_page(request: Request, job: str, unit: str) -> Response:
    orch = orchestrator(request)

    def load() -> dict[str, Any]:
        record = orch.job(job)
        view = orch.unit_view(record.id, unit)
        events = orch.events(record.id, view.number, limit=2000)
        diff = orch.diff(record.id, view.number) if record.isolated else None  # its changes, reviewed here
        return {"record": record, "unit": plain(view), "events": plain(events), "job_status": record.status,
                "diff": plain(diff)}

    data = await run_in_threadpool(load)
    record = data.pop("record")
    data["job"] = {"id": record.id, "name": record.name}
    return _render(request, "unit.html", title=f"{record.name} · {data['unit']['key']}", record=record,
                   unit=data["unit"], data=data,
                   payload=json.dumps(data["unit"]["payload"], indent=2, ensure_ascii=False, default=str))


@router.get("/docs")
async def api_docs(request: Request) -> Response:
    """The API reference, rendered from the OpenAPI document (no Swagger UI: nothing from a CDN)."""
    schema = request.app.openapi()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append({"method": method.upper(), "path": path, "op": op})
    spec = schema.get("components", {}).get("schemas", {})
    return _render(request, "docs.html", title="API", groups=groups, spec=spec, info=schema.get("info", {}))


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    if not web_config(request).token:
        return RedirectResponse("/", status_code=303)
    return _render(request, "login.html", title="Log in", next=safe_next(next), failed=False)


@router.post("/login")
async def login(request: Request) -> Response:
    config = web_config(request)
    if not config.token:
        return RedirectResponse("/", status_code=303)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    target = safe_next((form.get("next") or ["/"])[0])
    if not same_secret(token, config.token):
        await asyncio.sleep(0.5)  # slows guessing; the compare itself is constant-time
        return _render(request, "login.html", status_code=401, title="Log in", next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, request.app.state.sessions.create(), max_age=SESSION_SECONDS,
                        httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.app.state.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login" if web_config(request).token else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
