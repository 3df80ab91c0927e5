"""Keeping every tool result inside an assistant's budget (~25 K characters by default).

A page of results or jobs that would not fit is cut at a row boundary and says, in `note`, which
offset to call again with; anything else that is still too big (a unit asked for with a huge
max_chars) has its longest strings cut until it fits. Claude Code spills a result over ~25 K to a
file and other clients truncate blindly, so the server cuts first and says where the rest is.
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT_MAX_RESULT_CHARS = 25_000
_NOTE_ROOM = 400  # the note added to a cut page


def max_result_chars() -> int:
    try:
        value = int(os.environ.get("ABP_MCP_MAX_RESULT_CHARS", DEFAULT_MAX_RESULT_CHARS))
    except ValueError:
        return DEFAULT_MAX_RESULT_CHARS
    return max(2_000, value)


def size(data: Any) -> int:
    return len(json.dumps(data, ensure_ascii=False, default=str))


def fit_page(page: dict[str, Any], key: str, offset: int, cap: int | None = None) -> dict[str, Any]:
    """Keep the first rows of `page[key]` that fit in `cap`; set returned/next_offset and a note."""
    cap = cap or max_result_chars()
    rows = page[key]
    if size(page) <= cap:
        return page
    budget = cap - size({**page, key: []}) - _NOTE_ROOM
    kept: list[Any] = []
    used = 0
    for row in rows:
        used += size(row) + 2
        if used > budget and kept:
            break
        kept.append(row)
    following = offset + len(kept)
    page.update({key: kept, "returned": len(kept), "next_offset": following})
    page["note"] = (f"truncated: {len(kept)} of the {len(rows)} rows asked for fit in ~{cap // 1000} K characters; "
                    f"call again with offset={following} for the next ones"
                    + (f" ({page['note']})" if page.get("note") else ""))
    return page


def fit_result(data: dict[str, Any], cap: int | None = None) -> dict[str, Any]:
    """The last guard for any result: cut the longest strings (halving a limit) until it fits."""
    cap = cap or max_result_chars()
    if size(data) <= cap:
        return data
    limit = 8_000
    while limit >= 50:
        cut: dict[str, Any] = _cut_strings(data, limit)
        if size(cut) <= cap - 200:
            cut["truncated_to_fit"] = (f"long values were cut to {limit} characters to keep this result under "
                                       f"~{cap // 1000} K characters")
            return cut
        limit //= 2
    return {"error": f"the result was too large to return (over {cap} characters)", "truncated_to_fit": True}


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"… [cut: {len(value)} characters in all]"
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > 200:  # a huge list: its head and a count
            return [_cut_strings(v, limit) for v in value[:200]] + [f"… {len(value) - 200} more"]
        return [_cut_strings(v, limit) for v in value]
    return value
