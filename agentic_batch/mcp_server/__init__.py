"""The MCP server (`abp mcp`): batch jobs as tools for Claude Desktop, Claude Code or any MCP client.

A thin adapter over the service layer (the Orchestrator): tools validate and shape, the service
decides. Importing this package needs the `mcp` extra (`pip install 'agentic-batch[mcp]'`).
"""

from agentic_batch.mcp_server.server import build_server, run

__all__ = ["build_server", "run"]
