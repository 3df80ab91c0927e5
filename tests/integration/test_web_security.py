"""Who may use `abp serve`: loopback by default, a token anywhere else, no cross-site writes, no CORS."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from agentic_batch.web.app import create_app
from agentic_batch.web.config import WebConfig
from agentic_batch.web.server import serve_in_thread
from tests.fixtures.abp import abp
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)

TOKEN = "s3cret-token-for-tests"
EVIL = "http://evil.example"


def test_serve_refuses_a_public_address_without_a_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        result = abp("serve", "--host", host, "--port", "39999", timeout=60)
        assert result.returncode == 1, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "without a token" in lines[0] and "ABP_API_TOKEN" in lines[0], result.stderr
    assert abp("serve", "--port", "70000").returncode == 1


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--host", "0.0.0.0", "--token", "a"], {}, "the token from --token is 1 character long"),
        (["--host", "0.0.0.0", "--token", "fifteen-chars-x"], {}, "is 15 characters long"),
        (["--host", "0.0.0.0", "--token", " "], {}, "the token from --token is blank"),
        (["--host", "::", "--token", "a token with spaces in it"], {}, "contains spaces"),
        (["--host", "0.0.0.0"], {"ABP_API_TOKEN": "short"}, "the token from ABP_API_TOKEN is 5 characters"),
        (["--token", "  "], {}, "refusing to serve on 127.0.0.1: the token from --token is blank"),
    ],
)
def test_serve_refuses_a_weak_token(args: list[str], env: dict[str, str], needle: str) -> None:
    """A token anyone could guess (or could never send) is as good as none off loopback."""
    result = abp("serve", *args, "--port", "39999", timeout=60, env=env)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "secrets.token_urlsafe(32)" in lines[0]


def test_the_cli_does_not_import_the_web_stack_and_names_the_extra() -> None:
    probe = ("import sys\nfrom agentic_batch.cli import main\nsys.argv = ['abp', 'list', '--json']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('WEB', any(m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("WEB False"), out
    missing = ("import sys\nsys.modules['uvicorn'] = None\nfrom agentic_batch.cli import main\n"
               "main(['serve', '--port', '39998'])")
    out = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "pip install 'agentic-batch[web]'" in out.stderr, out


def test_cross_site_writes_are_refused_on_loopback(web: Web) -> None:  # noqa: F811
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some"), status=201)["job_id"]
    cancel = f"/api/jobs/{job}/cancel"
    form = {"content-type": "application/x-www-form-urlencoded"}
    # What a hostile page's <form method=post> sends: a form body, with or without an Origin.
    for headers in ({**form, "origin": EVIL}, form, {"content-type": "text/plain", "origin": EVIL}):
        response = web.client.post(cancel, content=b"x=1", headers=headers)
        assert response.status_code == 403 and "cross-site" in response.json()["error"], headers
    # A JSON request from another origin (only possible after a CORS preflight, never granted).
    assert web.client.post(cancel, json={}, headers={"origin": EVIL}).status_code == 403
    assert web.client.post(cancel, content=b"x", headers={**form, "x-abp-csrf": "guess"}).status_code == 403
    assert web.ok("GET", f"/api/jobs/{job}")["status"] == "CREATED"  # none of that did anything

    preflight = web.client.options(cancel, headers={"origin": EVIL, "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers  # no CORS at all
    assert "access-control-allow-origin" not in web.get("/api/jobs", headers={"origin": EVIL}).headers

    # The dashboard's own page carries the CSRF token it sends back in a header.
    page = web.get(f"/jobs/{job}").text
    csrf = re.search(r'name="abp-csrf" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert web.client.post(cancel, content=b"", headers={"x-abp-csrf": csrf, "origin": web.url}).status_code == 200
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends Host: evil.example.
    rebound = web.get("/api/jobs", headers={"host": "evil.example"})
    assert rebound.status_code == 421 and "loopback" in rebound.json()["error"]
    assert web.get("/api/jobs", headers={"host": "localhost"}).status_code == 200


@pytest.fixture
def guarded(orch, workdir):  # type: ignore[no-untyped-def]
    app = create_app(orch, WebConfig(host="0.0.0.0", token=TOKEN, cwd=workdir))
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_a_token_guards_every_request(guarded: httpx.Client, workdir) -> None:  # type: ignore[no-untyped-def]
    bearer = {"authorization": f"Bearer {TOKEN}"}
    for path in ("/api/jobs", "/api/stats", "/openapi.json", "/api/jobs/1/stream"):
        denied = guarded.get(path)
        assert denied.status_code == 401 and denied.json()["hint"].startswith("send 'Authorization"), path
    assert guarded.get("/api/jobs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/jobs", headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    assert guarded.get("/api/jobs", headers=bearer).json()["total"] == 0
    created = guarded.post("/api/jobs", json=spec(workdir, "fail_some"), headers=bearer)  # Bearer: no CSRF needed
    assert created.status_code == 201
    job = created.json()["job_id"]
    assert guarded.post(f"/api/jobs/{job}/cancel", json={}).status_code == 401
    assert guarded.get("/static/app.css").status_code == 200  # public: no secrets in it

    page = guarded.get("/jobs/1", headers={"accept": "text/html"})  # a browser is sent to the login page
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/jobs/1"
    assert guarded.get("/login").status_code == 200
    form = {"content-type": "application/x-www-form-urlencoded"}
    wrong = guarded.post("/login", content=b"token=nope&next=/", headers=form)
    assert wrong.status_code == 401 and "abp_session" not in wrong.headers.get("set-cookie", "")
    login = guarded.post("/login", content=f"token={TOKEN}&next=//evil.example/x".encode(), headers=form)
    assert login.status_code == 303 and login.headers["location"] == "/"  # no open redirect
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    # The client now holds the session cookie, like a browser after logging in.
    page = guarded.get(f"/jobs/{job}")
    assert page.status_code == 200
    csrf = re.search(r'name="abp-csrf" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert guarded.get("/api/jobs").status_code == 200
    assert guarded.post(f"/api/jobs/{job}/cancel", json={}).status_code == 403  # cookie alone: not enough
    assert guarded.post(f"/api/jobs/{job}/cancel", json={}, headers={"x-abp-csrf": "forged"}).status_code == 403
    done = guarded.post(f"/api/jobs/{job}/cancel", json={}, headers={"x-abp-csrf": csrf})
    assert done.status_code == 200 and done.json()["status"] == "CANCELLED"
    assert guarded.post("/logout", headers={"x-abp-csrf": csrf}).status_code == 303
    assert guarded.get("/api/jobs").status_code == 401  # the session is gone


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "OPTIONS", "PATCH", "HEAD"])
def test_a_method_no_route_has_is_405_not_a_csrf_refusal(web: Web, method: str) -> None:  # noqa: F811
    """The guard runs before routing; it used to call a TRACE a cross-site request (403). The Allow
    header lists every method of the path (Starlette's own 405 named only the first route's)."""
    for path, allowed in (("/api/jobs", {"GET", "POST"}), ("/api/stats", {"GET"}),
                          ("/api/jobs/1/prompt", {"PUT"}), ("/", {"GET"})):
        response = web.client.request(method, path)
        assert response.status_code == 405, (method, path, response.status_code, response.text)
        assert set(response.headers["allow"].replace(" ", "").split(",")) == allowed, response.headers
        if method != "HEAD":  # a HEAD answer has no body
            assert response.json()["error"] == f"method {method} is not allowed here"
    unknown = web.client.request(method, "/api/no-such-thing")
    assert unknown.status_code == (403 if method == "PATCH" else 404)  # a write to an unknown path: CSRF first
    if method not in ("HEAD", "PATCH"):
        assert web.client.request(method, "/static/app.css").status_code == 405  # StaticFiles' own answer
