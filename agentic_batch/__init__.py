"""agentic-batch: run an AI agent over every item of a large workload, in parallel, and never lose an item.

Layers (arrows point down only): cli / web / mcp_server -> service -> sources, prompts, engine,
workers -> store. See DESIGN.md in the project's shared folder.
"""

__version__ = "0.1.0"
