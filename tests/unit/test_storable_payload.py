"""`storable_payload`: one JSON dump checks an item and gives the column its text; only a text that
may hold something unstorable takes the exact walk (`storable_json`), with the same result."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from agentic_batch.store.storable import storable_json, storable_payload


@pytest.mark.parametrize("payload", [
    {"title": "plain", "n": 3, "x": 1.5, "ok": True, "none": None, "list": [1, "two", {"three": [3]}]},
    {"ko": "한국어", "ja": "日本語", "accent": "é", "ключ": "значение"},  # \\u escapes outside the surrogate range
    {"emoji": "😀", "music": "𝄞"},  # outside the BMP: a surrogate pair in the text, nothing to clean
    {"path": "C:\\\\users\\\\u0000x", "tricky": "\\ud800"},  # literal backslashes, not escapes
    {},
])
def test_clean_payloads_keep_their_value_and_get_the_column_text(payload: dict[str, Any]) -> None:
    cleaned, text, changed = storable_payload(payload)
    assert (cleaned, changed) == (payload, 0)
    assert text == json.dumps(payload)  # what the JSON column's serializer would have written
    assert json.loads(text) == payload


@pytest.mark.parametrize("payload", [
    {"text": "a\x00b"},
    {"k\x00ey": "v"},
    {"lone": "x\ud800y", "nested": [{"deep": "\udfff"}], "fine": "😀"},
    {"list": ["ok", "n\x00l", "\x00"]},
])
def test_unstorable_text_is_cleaned_exactly_as_storable_json_does(payload: dict[str, Any]) -> None:
    cleaned, text, changed = storable_payload(payload)
    assert (cleaned, changed) == storable_json(payload)
    assert changed > 0
    assert text is not None and json.loads(text) == cleaned
    assert "\\u0000" not in text and "\\ud800" not in text and "\\udfff" not in text


def test_a_payload_that_does_not_serialise_has_no_text() -> None:
    payload = {"when": datetime.date(2026, 11, 30), "text": "a\x00b"}
    cleaned, text, changed = storable_payload(payload)
    assert text is None  # the insert falls back to SQLAlchemy's binding, which reports it as before
    assert cleaned == {"when": datetime.date(2026, 11, 30), "text": "a\ufffdb"} and changed == 1
