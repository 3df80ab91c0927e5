"""Every failure as JSON `{"error": message, "hint": hint}` with the right status (HTML for pages).

`AbpError` carries its status (404 unknown job, 409 illegal state change, 422 bad spec); request
validation is 422 and a body that is not JSON is 400. Bad input is never a 500: a 500 means a bug.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from agentic_batch.errors import AbpError
from agentic_batch.store.faults import store_error_for

log = logging.getLogger("agentic_batch.web")


class BadRequest(AbpError):
    """The request itself is unreadable (a body that is not JSON)."""

    http_status = 400


async def read_json(request: Request) -> Any:
    """The JSON body, or `BadRequest` naming where it broke; an empty body is `None`."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, message: str, hint: str | None = None) -> Response:
    if _wants_html(request):
        templates: Jinja2Templates = request.app.state.templates
        context = {"status": status, "message": message, "hint": hint, "title": f"{status}",
                   "csrf": getattr(request.state, "csrf_token", ""), "logged_in": False}
        return templates.TemplateResponse(request, "error.html", context, status_code=status)
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


def describe_request_error(exc: RequestValidationError) -> tuple[int, str]:
    """(status, one line) for FastAPI's validation errors: 400 for unreadable JSON, else 422."""
    parts = []
    status = 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
            parts.append(f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return status, "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(AbpError)
    async def _abp_error(request: Request, exc: AbpError) -> Response:
        return error_response(request, exc.http_status, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        status, message = describe_request_error(exc)
        return error_response(request, status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        response = error_response(request, exc.status_code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        store_error = store_error_for(exc)  # a store fault: one line, no SQL, no item data
        if store_error is not None:
            log.warning("store error on %s %s: %s", request.method, request.url.path, store_error.message)
            return error_response(request, store_error.http_status, store_error.message, store_error.hint)
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}",
                             "hint": "this is a bug; the server log has the traceback"}, status_code=500)
