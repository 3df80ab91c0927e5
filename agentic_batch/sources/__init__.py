"""Sources: turn a `SourceSpec` into a stream of items (files, CSV/JSON/JSONL rows, SQL, Python).

The whole public surface is here. `iter_items` streams; nothing is held whole in memory and the
order is deterministic, so the first item is a stable choice for a test run. Every failure a user
can fix is a `SourceError` naming the file, line or item.
"""

from agentic_batch.sources.base import Item, describe_source, iter_items, resolve_spec

__all__ = ["Item", "describe_source", "iter_items", "resolve_spec"]
