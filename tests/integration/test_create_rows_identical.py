"""A create stores the rows the former create stored, byte for byte, on both stores: the same seq,
number, key, priority, status and payload JSON text, for content-keyed and field-keyed sources, across
several insert batches (a repeated key skipped within and across batches), with items the store must
clean (NUL, lone surrogate: in a field and in a key), non-ASCII keys and nested values.

The reference below is the former path written out: the content key of `json.dumps(sort_keys=True,
separators=(",", ":"), default=str)`, the payload as `json.dumps` of its `storable_json` copy, the key
through `storable_text`, the first of a repeated key kept, numbers dense in source order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentic_batch.service import creation
from agentic_batch.store.schema import units
from agentic_batch.store.storable import storable_json, storable_text
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "title": "plain", "p": 2},
    {"id": "b", "title": "nested", "n": {"list": [1, 2.5, None, True, "x"], "z": {"b": 1, "a": 2}}, "p": 1},
    {"id": "키", "title": "한국어 é 😀 𝄞", "p": 0},
    {"id": "a", "title": "a repeated key, and content seen again below", "p": 3},
    {"id": "c\x00d", "title": "a NUL \x00 in the key and here", "p": 1},
    {"id": "e", "title": "lone \ud800 surrogate", "p": 5},
    {"id": "f", "title": "back\\u0000slash \\ud800", "z": 1e16, "y": -0.0, "p": 0},
    {"id": "g", "title": "plain", "p": 2},
    {"id": "a", "title": "plain", "p": 2},
] + [{"id": f"k{i % 23}", "title": f"item {i % 31}", "p": i % 4} for i in range(60)]


def _former_rows(items: list[dict[str, Any]], key_field: str | None) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for seq, payload in enumerate(items):
        if key_field:
            key = str(payload[key_field])
        else:
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
            key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        key = storable_text(key)
        if key in seen:
            continue
        seen.add(key)
        cleaned, _ = storable_json(payload)
        priority = int(payload["p"]) if key_field else 0
        rows.append((seq, len(rows) + 1, key, priority, json.dumps(cleaned), "PENDING"))
    return rows


def _stored_rows(orch: Any, job_id: int) -> list[tuple[Any, ...]]:
    query = sa.select(units.c.seq, units.c.number, units.c.key, units.c.priority, sa.cast(units.c.payload, sa.Text),
                      units.c.status).where(units.c.job_id == job_id).order_by(units.c.seq)
    with orch.store.database.read() as conn:
        return [tuple(row) for row in conn.execute(query)]


@pytest.mark.parametrize("key_field", [None, "id"])
def test_create_stores_the_rows_the_former_create_stored(orch: Any, workdir: Path, key_field: str | None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(creation, "BATCH", 7)  # many batches: repeated keys within and across them
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    source: dict[str, Any] = {"kind": "jsonl", "path": str(path)}
    if key_field:
        source |= {"key": key_field, "priority_field": "p"}
    created = orch.create({"name": "rows", "source": source, "prompt": "{{ title }}", "worker": "command",
                           "worker_options": {"command": "true"}}, cwd=workdir)
    expected = _former_rows(ITEMS, key_field)
    assert _stored_rows(orch, created.job_id) == expected
    assert created.units == len(expected) and created.duplicates == len(ITEMS) - len(expected)
    assert any("\ufffd" in row[2] for row in expected) == bool(key_field)  # a cleaned key, when keyed by id
    # a sync adds nothing: every key is there already
    assert orch.sync(created.job_id).added == 0
    assert _stored_rows(orch, created.job_id) == expected
