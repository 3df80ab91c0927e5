"""Sources: turn a `SourceSpec` into a stream of items (files, CSV/JSON/JSONL rows, SQL, Python).

The whole public surface is here. `iter_items` streams; nothing is held whole in memory and the
order is deterministic, so the first item is a stable choice for a test run. Every failure a user
can fix is a `SourceError` naming the file, line or item. Each kind is a `SourceKind` (see `kind`)
declared in its own module and listed in `registry`.
"""

from agentic_batch.sources.base import Item, describe_source, iter_items, resolve_spec
from agentic_batch.sources.kind import SourceKind
from agentic_batch.sources.registry import SourceSpec, get_source_kind, source_kinds

__all__ = ["Item", "SourceKind", "SourceSpec", "describe_source", "get_source_kind", "iter_items", "resolve_spec",
           "source_kinds"]
