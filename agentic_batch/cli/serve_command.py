"""`abp serve`: the REST API and the web dashboard (FastAPI on uvicorn).

FastAPI and uvicorn are the `web` extra, imported only when this command runs, so `abp status` and
friends never pay for them. Binding anything but loopback without a token of at least 16 characters
is refused: the API can start agents and spend money, so it must never be open to a network by
accident, nor guarded by a token that can be guessed.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from agentic_batch.errors import AbpError, InvalidSpec


class MissingExtra(AbpError):
    """An optional dependency group is not installed."""


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(host: Annotated[str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1, "
                                                "localhost or ::1 needs a token of 16+ characters.")] = "127.0.0.1",
              port: Annotated[int, typer.Option("--port", help="TCP port.")] = 3847,
              token: Annotated[str | None, typer.Option("--token", help="Require `Authorization: Bearer "
                                                           "TOKEN` (or a login) on every request. Default: "
                                                           "$ABP_API_TOKEN.", show_default=False)] = None) -> None:
        """Serve the REST API (`/api`, reference at `/docs`) and the live dashboard (`/`)."""
        from agentic_batch.web.config import TOKEN_RECIPE, WebConfig, token_problem

        origin = "--token"
        if token is None:
            token, origin = os.environ.get("ABP_API_TOKEN") or None, "ABP_API_TOKEN"
        problem = token_problem(token, host)
        if problem == "is missing":
            raise InvalidSpec(f"refusing to serve on {host} without a token",
                              hint=f"set ABP_API_TOKEN or pass --token (make one with {TOKEN_RECIPE}), "
                              "or bind 127.0.0.1")
        if problem is not None:
            raise InvalidSpec(f"refusing to serve on {host}: the token from {origin} {problem}",
                              hint=f"make a strong one with {TOKEN_RECIPE}")
        if not 0 < port < 65536:
            raise InvalidSpec(f"--port {port} is not a TCP port")
        try:
            import uvicorn  # noqa: F401  (the extra's marker: say which to install)

            from agentic_batch.web.app import create_app
            from agentic_batch.web.server import make_server
        except ModuleNotFoundError as exc:
            raise MissingExtra(f"abp serve needs {exc.name}",
                               hint="pip install 'agentic-batch[web]'") from None
        from agentic_batch.cli.common import orchestrator
        from agentic_batch.cli.output import err

        config = WebConfig(host=host, port=port, token=token)
        web_app = create_app(orchestrator(), config)
        shown = f"[{host}]" if ":" in host else host
        err.print(f"abp dashboard on http://{shown}:{port}/  (API reference: /docs"
                  + (", token required)" if token else ")"))
        make_server(web_app, host=host, port=port).run()  # Ctrl-C ends live streams, then exits
