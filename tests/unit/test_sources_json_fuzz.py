"""Fuzz the streamed JSON source against `json.loads`: random documents read in random small chunks.

The streaming reader decodes from a buffer that ends wherever a chunk ends, so every place a value
can be cut (inside a number's fraction or exponent, a string escape, a literal, between tokens) must
make it read more rather than misread. Seeded, so a failure names a reproducible document.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import SourceError
from agentic_batch.sources import iter_items, json_stream
from agentic_batch.spec import SourceSpec

_STRING_CHARS = 'ab "\\/\n\t\u00e9\u2603\U0001f600]}[{,:.e1-'


def _space(rng: random.Random) -> str:
    return rng.choice(["", "", " ", "\n", "  ", "\r\n\t"])


def _number(rng: random.Random) -> str:
    """A number in any valid spelling: sign, fraction, exponent with e/E and an optional sign."""
    digits = str(rng.randint(1, 9)) + str(rng.randint(0, 10 ** rng.randint(0, 20)))
    text = rng.choice(["-", ""]) + rng.choice(["0", digits])
    if rng.random() < 0.5:
        text += "." + str(rng.randint(0, 10**rng.randint(0, 8)))
    if rng.random() < 0.4:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 300))
    return text


def _string(rng: random.Random) -> str:
    text = "".join(rng.choice(_STRING_CHARS) for _ in range(rng.randint(0, 12)))
    return json.dumps(text, ensure_ascii=rng.random() < 0.5)


def _value(rng: random.Random, depth: int) -> str:
    """The text of a random JSON value (numbers are most of it, as in an embedding)."""
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return _array(rng, depth + 1, lambda: _value(rng, depth + 1))
    if depth < 3 and roll < 0.3:
        return _object(rng, depth + 1)
    if roll < 0.75:
        return _number(rng)
    if roll < 0.9:
        return _string(rng)
    return rng.choice(["true", "false", "null"])


def _array(rng: random.Random, depth: int, element: Any) -> str:
    parts = [_space(rng) + element() + _space(rng) for _ in range(rng.randint(0, 6))]
    return "[" + ",".join(parts) + _space(rng) + "]"


def _object(rng: random.Random, depth: int, extra: tuple[str, str] | None = None) -> str:
    pairs = [(_string(rng), _value(rng, depth)) for _ in range(rng.randint(0, 4))]
    if extra is not None:
        pairs.insert(rng.randint(0, len(pairs)), extra)
    body = ",".join(f"{_space(rng)}{k}{_space(rng)}:{_space(rng)}{v}{_space(rng)}" for k, v in pairs)
    return "{" + body + _space(rng) + "}"


def _document(rng: random.Random) -> tuple[str, str | None]:
    """A valid file whose items are an array of objects, at the top or under the key path 'p.items'."""
    items = _array(rng, 1, lambda: _object(rng, 1))
    if rng.random() < 0.3:
        return _space(rng) + items + _space(rng), None
    inner = _object(rng, 1, extra=('"items"', items))
    return _space(rng) + _object(rng, 0, extra=('"p"', inner)) + _space(rng), "p.items"


def _expected(text: str, json_path: str | None) -> list[Any]:
    value = json.loads(text)
    for step in (json_path or "").split(".") if json_path else []:
        # json.loads keeps the last of duplicate keys; the stream takes the first: generated keys
        # other than the path's are random strings, so a clash with 'p'/'items' is vanishingly rare.
        value = value[step]
    return value


@pytest.mark.parametrize("seed", range(8))
def test_stream_matches_json_loads_at_any_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "d.json"
    for round_number in range(60):
        text, json_path = _document(rng)
        path.write_text(text, encoding="utf-8")
        expected = _expected(text, json_path)
        for chunk in (1, 2, 3, rng.randint(4, 40)):
            monkeypatch.setattr(json_stream, "CHUNK_CHARS", chunk)
            spec = SourceSpec(kind="json", path=str(path), json_path=json_path)
            try:
                got = [item.payload for item in iter_items(spec, cwd=tmp_path)]
            except SourceError as exc:
                pytest.fail(f"seed {seed} round {round_number} chunk {chunk}: {exc.one_line()}\n{text}")
            assert got == expected, f"seed {seed} round {round_number} chunk {chunk}:\n{text}"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13])
def test_numbers_skipped_before_the_path_survive_every_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """The case from the field: an embedding of floats before the items (a cut after '.' or 'e')."""
    monkeypatch.setattr(json_stream, "CHUNK_CHARS", chunk)
    embedding = [0.5, -1.25e-7, 3e10, 1E+2, 12.0, 7]
    text = '{"embedding": [0.5, -1.25e-7, 3e10, 1E+2, 12.0, 7], "items": [{"n": 1.5e3}]}'
    assert json.loads(text)["embedding"] == embedding
    (tmp_path / "d.json").write_text(text, encoding="utf-8")
    spec = SourceSpec(kind="json", path=str(tmp_path / "d.json"), json_path="items")
    assert [item.payload for item in iter_items(spec, cwd=tmp_path)] == [{"n": 1500.0}]


@pytest.mark.parametrize("text", ["[1.]", "[{}, 1.x]", '{"a": [1e], "items": []}', '{"a": -, "items": []}'])
def test_broken_numbers_are_still_malformed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Reading more at a cut number must not turn invalid JSON into valid items."""
    for chunk in (1, 2, 64):
        monkeypatch.setattr(json_stream, "CHUNK_CHARS", chunk)
        (tmp_path / "d.json").write_text(text, encoding="utf-8")
        json_path = "items" if text.startswith("{") else None
        spec = SourceSpec(kind="json", path=str(tmp_path / "d.json"), json_path=json_path)
        with pytest.raises(SourceError, match="malformed JSON|not an object"):
            list(iter_items(spec, cwd=tmp_path))


@pytest.mark.parametrize("cut_after", [".", "e", "-"])
def test_the_reported_file_at_the_real_chunk_size(tmp_path: Path, cut_after: str) -> None:
    """`{"embedding": [floats...], "items": [...]}` with the first chunk ending right after a '.'/'e'/'-'."""
    number = {".": "0.25", "e": "1e5", "-": "2e-7"}[cut_after]
    count = json_stream.CHUNK_CHARS // len(number) + 10
    body = '"embedding": [' + ", ".join([number] * count) + '], "items": [{"id": 1}, {"id": 2}]}'
    offset = number.index(cut_after) + 1  # the cut falls just after this character of a number
    for pad in range(len(number) + 2):
        text = "{" + " " * pad + body
        if text[json_stream.CHUNK_CHARS - 1] == cut_after and text[json_stream.CHUNK_CHARS - offset] == number[0]:
            break
    else:  # pragma: no cover - the padding loop always finds one
        pytest.fail("no padding puts the chunk boundary inside a number")
    (tmp_path / "d.json").write_text(text, encoding="utf-8")
    spec = SourceSpec(kind="json", path=str(tmp_path / "d.json"), json_path="items")
    assert [item.payload for item in iter_items(spec, cwd=tmp_path)] == [{"id": 1}, {"id": 2}]
