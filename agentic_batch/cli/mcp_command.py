"""`abp mcp [--http] [--port P]`: serve the MCP server (stdio by default, streamable HTTP on 127.0.0.1).

The `mcp` SDK is an optional extra, imported only here, so the rest of the CLI starts without it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agentic_batch.errors import AbpError, InvalidSpec

INSTALL_HINT = "pip install 'agentic-batch[mcp]'"


def register(app: typer.Typer) -> None:
    @app.command("mcp")
    def mcp(http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP on 127.0.0.1 instead of "
                                               "stdio (endpoint /mcp).")] = False,
            port: Annotated[int, typer.Option("--port", help="Port for --http.")] = 8766) -> None:
        """Run the MCP server, for Claude Desktop, Claude Code or any MCP client (stdio unless --http).

        Add to a client's `mcpServers`: {"abp": {"command": "/path/to/abp", "args": ["mcp"]}}.
        """
        if not 0 < port < 65536:
            raise InvalidSpec(f"--port {port} is not a TCP port")
        try:
            import mcp.server.mcpserver  # noqa: F401  (mcp 2.x; 1.x lacks it)
        except ImportError:
            raise AbpError("the MCP server needs the mcp package, version 2", hint=INSTALL_HINT) from None
        from agentic_batch.mcp_server import run

        run(http=http, port=port)
