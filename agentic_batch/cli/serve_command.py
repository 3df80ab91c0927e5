"""`abp serve`: the REST API and the web dashboard (FastAPI on uvicorn), in the foreground or, with
`--detach`, as a background process (`--status`, `--stop`; see service/dashboard.py).

FastAPI and uvicorn are the `web` extra, imported only when this command runs, so `abp status` and
friends never pay for them. Binding anything but loopback without a token of at least 16 characters
is refused: the API can start agents and spend money, so it must never be open to a network by
accident, nor guarded by a token that can be guessed.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from agentic_batch.cli.common import JsonFlag
from agentic_batch.errors import AbpError, InvalidSpec
from agentic_batch.service.models import DashboardInfo


class MissingExtra(AbpError):
    """An optional dependency group is not installed."""


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(host: Annotated[str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1, "
                                                "localhost or ::1 needs a token of 16+ characters.")] = "127.0.0.1",
              port: Annotated[int | None, typer.Option("--port", help="TCP port.  [default: 3847]",
                                                       show_default=False)] = None,
              token: Annotated[str | None, typer.Option("--token", help="Require `Authorization: Bearer "
                                                           "TOKEN` (or a login) on every request. Default: "
                                                           "$ABP_API_TOKEN.", show_default=False)] = None,
              detach: Annotated[bool, typer.Option("--detach", help="Run in the background (its own session, "
                                                   "output to $ABP_HOME/dashboard.log) and print its URL; if one "
                                                   "runs already, print that one's.")] = False,
              show_status: Annotated[bool, typer.Option("--status", help="Is a background dashboard running? "
                                                        "Its URL and pid (exit 1 if none).")] = False,
              stop: Annotated[bool, typer.Option("--stop", help="Stop the background dashboard.")] = False,
              as_json: JsonFlag = False,
              detached_child: Annotated[bool, typer.Option("--detached-child", hidden=True)] = False) -> None:
        """Serve the REST API (`/api`, reference at `/docs`) and the live dashboard (`/`)."""
        from agentic_batch.service import dashboard

        if sum((detach, show_status, stop)) > 1:
            raise InvalidSpec("give one of --detach, --status, --stop")
        origin = "--token"
        if token is None:
            token, origin = os.environ.get("ABP_API_TOKEN") or None, "ABP_API_TOKEN"
        if show_status or stop:
            from agentic_batch.config import load_settings

            settings = load_settings()
            info = dashboard.status(settings) if show_status else dashboard.stop(settings)
            _report(info, as_json)
            if show_status and not info.running:
                raise typer.Exit(1)
            return
        dashboard.check_bind(host, dashboard.DEFAULT_PORT if port is None else port, token, origin)
        try:
            import uvicorn  # noqa: F401  (the extra's marker: say which to install)
        except ModuleNotFoundError as exc:
            raise MissingExtra(f"abp serve needs {exc.name}", hint="pip install 'agentic-batch[web]'") from None
        if detach:
            from agentic_batch.config import load_settings

            _report(dashboard.start(load_settings(), host=host, port=port, token=token), as_json)
            return
        _serve(host, dashboard.DEFAULT_PORT if port is None else port, token, registered=detached_child)


def _serve(host: str, port: int, token: str | None, registered: bool) -> None:
    """Serve in this process until interrupted; `registered` (the detached child): publish the pid file
    once the socket is bound, so whoever waits for it can connect at once."""
    from agentic_batch.cli.common import orchestrator
    from agentic_batch.cli.output import err
    from agentic_batch.service import dashboard
    from agentic_batch.web.app import create_app
    from agentic_batch.web.config import WebConfig
    from agentic_batch.web.server import make_server

    config = WebConfig(host=host, port=port, token=token)
    web_app = create_app(orchestrator(), config)
    err.print(f"abp dashboard on {dashboard.url_for(host, port)}  (API reference: /docs"
              + (", token required)" if token else ")"))
    if not registered:
        make_server(web_app, host=host, port=port).run()  # Ctrl-C ends live streams, then exits
        return
    sock = _bind(host, port)
    with dashboard.registered(orchestrator().settings, host, port, token_required=token is not None):
        make_server(web_app).run(sockets=[sock])  # SIGTERM (abp serve --stop) ends it


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AbpError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="another program (a foreground `abp serve`?) has that port: pass --port") from None
    sock.listen(2048)
    return sock


def _report(info: DashboardInfo, as_json: bool) -> None:
    from agentic_batch.cli.output import err, markup_safe, out, print_json

    if as_json:
        print_json(info)
        return
    if info.note:
        err.print(f"[yellow]{markup_safe(info.note)}[/yellow]")
    if info.stopped:
        out.print(f"stopped the dashboard (pid {info.pid}, {markup_safe(info.url)})")
    elif not info.running:
        out.print("no dashboard is running in the background" + (" (start one with `abp serve --detach`)"))
    else:
        verb = "started" if info.started else "running"
        out.print(markup_safe(info.url or ""))
        err.print(f"dashboard {verb}: pid {info.pid}, log {markup_safe(info.log)}"
                  + ("; token required (log in with it)" if info.token_required else "")
                  + ("; stop it with `abp serve --stop`" if info.started else ""))
