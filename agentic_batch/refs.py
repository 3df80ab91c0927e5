"""What users type to name things (job ids, unit numbers, unit keys) and the range of every number an
interface accepts.

Why one module: every interface (CLI, REST, MCP, dashboard) parses the same references, so they
accept and refuse the same text. An id is ASCII digits in the store's range: `str.isdigit()` and
`int()` also take `²` (then fail) and `٣` (then mean 3), and a number past 2^63 overflows SQLite's
integer binding. Anything else is simply not an id, so the caller answers "no such job/unit".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

#: The largest id or count the store holds: its INTEGER columns (int4 on PostgreSQL).
MAX_ID = 2**31 - 1
#: The prefix that makes a unit reference a key: `key:src/a.py`.
KEY_PREFIX = "key:"

_ASCII_DIGITS = re.compile(r"[0-9]+")

UnitRefKind = Literal["number", "key"]


def parse_id(value: object) -> int | None:
    """`value` as an id (1..MAX_ID) if it is one: an int, or a string of ASCII digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _ASCII_DIGITS.fullmatch(text := value.strip()) and len(text) <= 12:
        number = int(text)
    else:
        return None
    return number if 1 <= number <= MAX_ID else None


def is_ascii_number(text: str) -> bool:
    """True for a non-empty run of ASCII digits (whatever its size)."""
    return bool(_ASCII_DIGITS.fullmatch(text.strip()))


def parse_unit_ref(ref: str | int) -> tuple[UnitRefKind, int | str | None]:
    """A unit reference: ("number", n) for a number (n is None when out of range), ("key", k) for
    `key:K`, or for a bare text that is not a number (a number is always the unit's number)."""
    if isinstance(ref, bool):
        return "number", None
    if isinstance(ref, int):
        return "number", parse_id(ref)
    text = str(ref)
    if text.startswith(KEY_PREFIX):
        return "key", text[len(KEY_PREFIX):]
    if is_ascii_number(text):
        return "number", parse_id(text)
    return "key", text


_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
#: The most unit numbers one selection may name (a range past it is surely a typo).
MAX_SELECTED = 1_000_000


def parse_unit_numbers(text: str) -> list[int] | None:
    """`3,7-12` as [3, 7, 8, 9, 10, 11, 12] (sorted, without repeats); None when it is not such a list."""
    numbers: set[int] = set()
    for part in text.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            return None
        low = parse_id(match.group(1))
        high = parse_id(match.group(2)) if match.group(2) else low
        if low is None or high is None or high < low or len(numbers) + high - low + 1 > MAX_SELECTED:
            return None
        numbers.update(range(low, high + 1))
    return sorted(numbers)


def format_unit_numbers(numbers: Iterable[int]) -> str:
    """[3, 7, 8, 9] as `3, 7-9` (the inverse of `parse_unit_numbers`, spaced for reading)."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
