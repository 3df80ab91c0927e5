"""What an error signature masks and what it keeps (agentic_batch.error_signature)."""

from __future__ import annotations

import pytest

from agentic_batch.error_signature import MAX_SIGNATURE_CHARS, error_signature


@pytest.mark.parametrize(("error", "signature"), [
    ("item 17: cannot open '/data/a/17.json'", "item <n>: cannot open <str>"),
    ("item 2999: cannot open /data/b/2999.json", "item <n>: cannot open <path>"),
    ("cannot read ./out/x.txt or ~/notes/y.md", "cannot read <path> or <path>"),
    ("KeyError: 'name'", "KeyError: <str>"),
    ('ValueError: bad field "title" in row 12', "ValueError: bad field <str> in row <n>"),
    ("request 1b4e28ba-2fa1-11d2-883f-0016d3cca427 failed", "request <uuid> failed"),
    ("GET https://api.example.com/v1/items/42?x=1 returned 503", "GET <url> returned <n>"),
    ("lock 0xdeadbeef held by commit 3f2a9bc1d", "lock <hex> held by commit <hex>"),
    ("unit-42 took 3.5s (limit -1)", "unit-<n> took <n>s (limit <n>)"),
    ("can't find it, don't retry", "can't find it, don't retry"),  # apostrophes are not quotes
    ("C:\\Users\\me\\x.txt missing", "<path> missing"),
    ("exit code 1: Traceback (most recent call last):\n  File \"/x/y.py\", line 3, in f\nValueError: bad 42",
     "exit code <n>: Traceback (most recent call last): … ValueError: bad <n>"),
    ("   \n  spaced    out\n\n", "spaced out"),
    ("", ""),
])
def test_masks_what_varies_and_keeps_the_words(error: str, signature: str) -> None:
    assert error_signature(error) == signature


def test_same_cause_same_signature_other_cause_another() -> None:
    one = {error_signature(f"item {i}: cannot open '/data/{i % 7}/{i}.json'") for i in range(1000)}
    assert len(one) == 1
    assert error_signature("KeyError: 'a'") != error_signature("IndexError: 'a'")  # the class is kept


def test_none_and_long_errors() -> None:
    assert error_signature(None) is None
    long = error_signature("word " * 10_000)
    assert long is not None and len(long) == MAX_SIGNATURE_CHARS and long.endswith("…")
    assert error_signature("x" * 1_000_000 + "\n" + "y") is not None  # bounded work on a huge line
