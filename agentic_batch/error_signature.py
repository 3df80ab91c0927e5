"""An error's signature: its text with what varies from unit to unit masked, so that 3,000 units
failing with `item 17: cannot open '/data/a/17.json'` ... `item 2999: cannot open '/data/b/2999.json'`
read as one cause, `item <n>: cannot open <str>`.

Masked: URLs, UUIDs, quoted values, paths, hex (0x…, hashes), numbers (also inside ids such as
`unit-42`). Kept: the words, and so the exception class (`KeyError`, `exit code <n>`). A multi-line
error (a traceback, a command's stderr) is its first and last lines, which is where the cause is said.

Stored with the unit when it fails (`units.error_signature`), because grouping 100,000 failed units
by re-normalising every error on each read costs seconds (see bench/error_groups.py). The function
is pure and versionless on purpose: changing it changes how new failures group, and the store's
migration recomputes the signatures of failed units when a revision needs to.
"""

from __future__ import annotations

import re

#: Longest signature kept (characters); longer ones end in `…`.
MAX_SIGNATURE_CHARS = 240

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    # A quoted value: the quote opens after a non-word character and closes before one, so the
    # apostrophes of "can't" and "don't" are not a quoted span.
    (re.compile(r"(?<![\w'\"`])'[^'\n]{0,300}'(?![\w'])"), "<str>"),
    (re.compile(r'(?<![\w"\'`])"[^"\n]{0,300}"(?![\w"])'), "<str>"),
    (re.compile(r"(?<![\w`])`[^`\n]{0,300}`(?![\w`])"), "<str>"),
    (re.compile(r"(?<![\w<>])(?:[A-Za-z]:\\|\\\\)[^\s:;,'\"]+"), "<path>"),  # C:\dir\file, \\host\share
    (re.compile(r"(?<![\w<>/])(?:~|\.{1,2})?(?:/[\w.@+%=-]+)+/?|(?<![\w<>/])(?:[\w.@+-]+/)+[\w.@+-]+"), "<path>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b"), "<hex>"),
    (re.compile(r"(?:(?<![\w.])[-+])?\d+(?:[.,]\d+)*"), "<n>"),
)
_SPACE = re.compile(r"\s+")


def error_signature(error: str | None) -> str | None:
    """The error's text with its variable parts masked (None for no error)."""
    if error is None:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    text = text[:4 * MAX_SIGNATURE_CHARS]  # bound the regex work on a huge first line
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_SIGNATURE_CHARS:
        text = text[:MAX_SIGNATURE_CHARS - 1] + "…"
    return text
