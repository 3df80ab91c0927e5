"""Text every store dialect can hold, and telling a bad row from a broken store.

PostgreSQL text columns refuse NUL bytes (psycopg raises DataError for the whole batch) and no
driver can encode a lone surrogate as UTF-8. Agent output, item fields and error texts may carry
either, so every text column written goes through `storable_text`: NUL and lone surrogates become
U+FFFD. JSON columns need no change (the serializer escapes them as \\u0000 / \\ud800).

`is_transient` (store.faults) separates a store that is down, locked or full (retry the same write
later) from a write that failed because of one of its rows (split the batch, fail that row's unit,
write the rest).
"""

from __future__ import annotations

import re
from typing import Any

from agentic_batch.store.faults import describe, is_transient

__all__ = ["is_transient", "rejection_reason", "storable", "storable_json", "storable_text", "unstorable_count"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_count(text: str) -> int:
    """How many characters `storable_text` would replace (0 for clean text; cheap then)."""
    count = text.count("\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        count += len(_SURROGATE.findall(text))
    return count


def storable_text(text: str) -> str:
    """`text` with NUL bytes and lone surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub(REPLACEMENT, text)
    return text


def storable(value: Any) -> Any:
    """`storable_text` for a string, anything else unchanged (for optional text columns)."""
    return storable_text(value) if isinstance(value, str) else value


def storable_json(value: Any) -> tuple[Any, int]:
    """A JSON value with every string (keys too) made storable, and how many characters changed."""
    if isinstance(value, str):
        n = unstorable_count(value)
        return (storable_text(value), n) if n else (value, 0)
    if isinstance(value, dict):
        total, out = 0, {}
        for key, item in value.items():
            new_key, n_key = storable_json(key) if isinstance(key, str) else (key, 0)
            new_item, n_item = storable_json(item)
            out[new_key] = new_item
            total += n_key + n_item
        return (out, total) if total else (value, 0)
    if isinstance(value, list):
        items = [storable_json(item) for item in value]
        total = sum(n for _, n in items)
        return ([v for v, _ in items], total) if total else (value, 0)
    return value, 0


def rejection_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a row was refused, without the SQL or its parameters (item data)."""
    orig = getattr(exc, "orig", None)
    name = type(orig if isinstance(orig, BaseException) else exc).__name__
    line = f"{name}: {describe(exc)}"
    return line if len(line) <= limit else line[:limit] + "…"
