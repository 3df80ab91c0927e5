"""Who may talk to `abp serve`, and which requests may change anything.

- Loopback without a token: only requests whose Host is a loopback name are served, so a web page
  on another site cannot reach the API through DNS rebinding.
- With a token (required off loopback): every request carries `Authorization: Bearer <token>` or
  the session cookie the login page sets. Both are compared in constant time.
- Cross-site request forgery: a mutating request (POST/PUT/PATCH/DELETE) whose Origin is another
  site is refused. Otherwise it needs one thing a cross-site form cannot send: a Bearer token, the
  `X-ABP-CSRF` header with the page's token, or (loopback without a token) a JSON (or JSON Lines)
  Content-Type or the DELETE method, which a browser will only send cross-origin after a CORS
  preflight that this server never grants.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentic_batch.web.config import WebConfig, is_loopback

SESSION_COOKIE = "abp_session"
CSRF_HEADER = "x-abp-csrf"
#: Request bodies a cross-site form cannot send without a CORS preflight (JSON, JSON Lines).
PREFLIGHTED_TYPES = frozenset({"application/json", "application/x-ndjson"})
SESSION_SECONDS = 7 * 24 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PREFIXES = ("/static/", "/login", "/favicon.ico")
SECURITY_HEADERS = {
    # Defence in depth behind the escaping: no inline script, nothing from another origin.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def same_secret(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    """Dashboard sessions after a login: session id -> (CSRF token, expiry). In memory: a restart
    of the server logs everyone out, which is fine for a local tool."""

    def __init__(self, limit: int = 1000) -> None:
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._limit = limit
        #: The CSRF token of pages served without a session (loopback, no token).
        self.anonymous_csrf = secrets.token_urlsafe(32)

    def create(self) -> str:
        session_id = secrets.token_urlsafe(32)
        self._items[session_id] = (secrets.token_urlsafe(32), time.time() + SESSION_SECONDS)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
        return session_id

    def csrf_for(self, session_id: str | None) -> str | None:
        if not session_id:
            return None
        for known, (csrf, expires) in list(self._items.items()):
            # Constant-time compare against each id: the cookie value never steers a lookup.
            if hmac.compare_digest(known.encode(), session_id.encode()):
                if expires < time.time():
                    self._items.pop(known, None)
                    return None
                return csrf
        return None

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._items.pop(session_id, None)


def origin_matches_host(origin: str, host: str) -> bool:
    """Is `Origin: scheme://host[:port]` this server, as named by the Host header?"""
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _refuse(request: Request, status: int, message: str, hint: str | None = None) -> Response:
    return JSONResponse({"error": message, "hint": hint}, status_code=status, headers=SECURITY_HEADERS)


class Guard:
    """ASGI middleware applying the rules in this module's docstring, and the security headers."""

    def __init__(self, app: ASGIApp, config: WebConfig, sessions: Sessions,
                 routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.config = config
        self.sessions = sessions
        #: The app's routes, to answer a method the path does not take with 405 and the path's full
        #: Allow list before the CSRF check (this guard runs before routing: it used to call a TRACE
        #: a cross-site request, 403; and Starlette's own 405 lists only the first matching route).
        self.routes = list(routes)

    def allowed_methods(self, scope: Scope) -> set[str]:
        """Methods the routes whose path matches take; empty for an unknown path. (FastAPI's routes do
        not answer HEAD for GET, so HEAD is listed only where a route declares it.)"""
        allowed: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                allowed.update(getattr(route, "methods", None) or ())
        return allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self.check(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, request: Request) -> Response | None:
        """None if the request may go on, else the response that refuses it."""
        host = request.headers.get("host", "")
        if self.config.loopback_only and not is_loopback(host.rsplit(":", 1)[0] if not host.endswith("]") else host):
            return _refuse(request, 421, f"this server answers only to a loopback host name, not {host!r}",
                           "open it as http://127.0.0.1:PORT")
        path = request.url.path
        public = path.startswith(_PUBLIC_PREFIXES)
        bearer = _bearer(request)
        session_id = request.cookies.get(SESSION_COOKIE)
        session_csrf = self.sessions.csrf_for(session_id)
        request.scope.setdefault("state", {})
        request.scope["state"]["csrf_token"] = session_csrf or self.sessions.anonymous_csrf
        if self.config.token is not None and not public:
            by_bearer = same_secret(bearer, self.config.token)
            if not by_bearer and session_csrf is None:
                browser = "text/html" in request.headers.get("accept", "") and not path.startswith("/api/")
                if browser and request.method in _SAFE_METHODS:
                    return RedirectResponse(f"/login?next={quote(safe_next(request.url.path))}", status_code=303)
                return _refuse(request, 401, "authentication required",
                               "send 'Authorization: Bearer <token>' (the server's --token / ABP_API_TOKEN)")
        allowed = self.allowed_methods(request.scope)
        if allowed and request.method not in allowed:
            listed = ", ".join(sorted(allowed))
            return JSONResponse({"error": f"method {request.method} is not allowed here",
                                 "hint": f"{path} takes {listed}"},
                                status_code=405, headers={**SECURITY_HEADERS, "allow": listed})
        if request.method in _SAFE_METHODS or (not allowed and request.method not in _WRITE_METHODS):
            return None  # a TRACE to an unknown path: no handler takes it, routing answers 404
        return self._check_csrf(request, bearer, session_csrf)

    def _check_csrf(self, request: Request, bearer: str | None, session_csrf: str | None) -> Response | None:
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and not origin_matches_host(origin, host):
            return _refuse(request, 403, "cross-site request refused", f"Origin {origin!r} is not this server")
        if request.url.path == "/login":
            return None  # the login form itself: guarded by the Origin check and the token it carries
        if self.config.token is not None and same_secret(bearer, self.config.token):
            return None
        expected = session_csrf or (None if self.config.token is not None else self.sessions.anonymous_csrf)
        if same_secret(request.headers.get(CSRF_HEADER), expected):
            return None
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # Neither these content types nor DELETE are "simple" for a browser: cross-site they need the
        # CORS preflight this server never grants.
        preflighted = content_type in PREFLIGHTED_TYPES or request.method == "DELETE"
        if self.config.token is None and preflighted and session_csrf is None:
            return None
        return _refuse(request, 403, "cross-site request refused",
                       "send the X-ABP-CSRF header (the dashboard does), or Content-Type: application/json")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only same-site paths (`/jobs/3`), never `//evil.example`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
