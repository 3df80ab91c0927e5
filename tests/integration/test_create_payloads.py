"""A created job's units hold each item's payload exactly, on both stores, through the bulk insert that
binds the payloads as JSON text (NUL and lone surrogates cleaned to U+FFFD, everything else as given)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentic_batch.store.records import NewUnit
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)

ITEMS: list[dict[str, Any]] = [
    {"id": 1, "title": "plain", "nested": {"list": [1, 2.5, None, True, "x"]}},
    {"id": 2, "title": "한국어 日本語 é", "ключ": "значение"},
    {"id": 3, "title": "emoji 😀 𝄞"},
    {"id": 4, "title": "a\x00b"},
    {"id": 5, "title": "back\\u0000slash \\ud800"},
    {"id": 6, "title": "lone \ud800 surrogate"},
]
EXPECTED = {**{str(i["id"]): i for i in ITEMS}, "4": {"id": 4, "title": "a\ufffdb"},
            "6": {"id": 6, "title": "lone \ufffd surrogate"}}


def test_created_units_hold_each_payload_exactly(orch: Any, workdir: Path) -> None:
    path = workdir / "items.jsonl"
    # json.dumps escapes the lone surrogate, so the file is valid UTF-8 and the reader yields it as is
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    spec = {"name": "payloads", "source": {"kind": "jsonl", "path": str(path), "key": "id"},
            "prompt": "{{ title }}", "worker": "command", "worker_options": {"command": "true"}}
    created = orch.create(spec, cwd=workdir)
    assert created.units == len(ITEMS)
    stored = {u.key: u.payload for u in orch.store.units.iter_units(created.job_id)}
    assert stored == EXPECTED
    assert [orch.unit(created.job_id, n).number for n in range(1, 7)] == [1, 2, 3, 4, 5, 6]


def test_units_given_without_their_text_are_inserted_as_before(orch: Any) -> None:
    """Callers that pass payloads alone (sync, add, tests) keep SQLAlchemy's JSON binding."""
    store = orch.store
    job_id = store.jobs.insert_job(name="plain", status="CREATED", source={"kind": "jsonl"}, worker="command",
                                   worker_options={}, concurrency=1, max_retries=0, timeout_s=10, workdir="/")
    assert store.units.insert_units(job_id, [NewUnit(seq=0, key="a", payload={"x": 1}),
                                             NewUnit(seq=1, key="b", payload={"x": 2}, payload_json='{"x": 2}'),
                                             NewUnit(seq=2, key="a", payload={"x": 3})]) == 2
    assert {u.key: u.payload for u in store.units.iter_units(job_id)} == {"a": {"x": 1}, "b": {"x": 2}}
