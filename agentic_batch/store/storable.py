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

import json
import re
from typing import Any

from agentic_batch.jsontext import one_shot_encoder
from agentic_batch.store.faults import describe, is_transient

__all__ = ["column_json", "is_transient", "rejection_reason", "storable", "storable_json", "storable_payload",
           "storable_text", "unstorable_count"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
#: In ASCII-escaped JSON text: an escaped NUL or surrogate (`\u0000`, `\ud800`-`\udfff`).
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|d[89a-f])")


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


#: `json.dumps(value)`: the text a JSON column's serializer writes for it.
column_json = one_shot_encoder()


def storable_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], str | None, int]:
    """`storable_json` of an item's payload, plus its text for the JSON column (None when it does not
    serialise: the insert then reports that as before), and how many characters changed.

    The column's serializer (`json.dumps`, ASCII-escaped) writes a NUL as `\\u0000` and every
    surrogate as `\\ud800`-`\\udfff`, so a text holding neither has nothing to clean: one C-speed dump
    both checks the item and gives the column its value (a Python walk over every string of 100,000
    items cost more than inserting them). A text holding either (rarely: a NUL, a lone surrogate, a
    character outside the BMP, written as a surrogate pair, or a literal backslash-u) takes the walk."""
    try:
        text = column_json(payload)
    except (TypeError, ValueError):
        cleaned, changed = storable_json(payload)
        return cleaned, None, changed
    if _ESCAPED_UNSTORABLE.search(text) is None:
        return payload, text, 0
    cleaned, changed = storable_json(payload)
    return cleaned, (json.dumps(cleaned) if changed else text), changed


def rejection_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a row was refused, without the SQL or its parameters (item data)."""
    orig = getattr(exc, "orig", None)
    name = type(orig if isinstance(orig, BaseException) else exc).__name__
    line = f"{name}: {describe(exc)}"
    return line if len(line) <= limit else line[:limit] + "…"
