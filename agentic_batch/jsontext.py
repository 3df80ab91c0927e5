"""JSON text made fast where it is made per item (a bulk create encodes every item twice)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def one_shot_encoder(**options: Any) -> Callable[[Any], str]:
    """`json.JSONEncoder(**options).encode`, calling the C encoder straight away: `encode` builds that
    encoder anew and goes through two Python frames for every value, half the time of encoding a
    small item. The same text (`encode` makes the same C encoder for a one-shot dump, and its own
    shortcut for a lone string gives what the C encoder gives). Circular structures are still refused
    (ValueError): the markers are reset after a failed call."""
    base = json.JSONEncoder(**options)
    markers: dict[int, Any] | None = {} if base.check_circular else None
    make = _c_encoder(base, markers)
    if make is None:
        return base.encode

    def encode(value: Any) -> str:
        try:
            return "".join(make(value, 0))
        except BaseException:
            if markers:
                markers.clear()
            raise

    return encode


def chunk_encoder(**options: Any) -> Callable[[Any, int], list[str]] | None:
    """The C encoder of `json.JSONEncoder(**options)` itself, for a loop that calls it inline
    (`"".join(make(value, 0))`, no Python frame per value); None without the C accelerator. It does
    not look for circular structures: one fails with RecursionError (the caller retries that value
    with `one_shot_encoder` for the ValueError a dump gives)."""
    return _c_encoder(json.JSONEncoder(**options, check_circular=False), None)


def _c_encoder(base: json.JSONEncoder, markers: dict[int, Any] | None) -> Callable[[Any, int], list[str]] | None:
    from json.encoder import c_make_encoder  # type: ignore[attr-defined]

    if c_make_encoder is None or base.indent is not None:
        return None
    strings = json.encoder.encode_basestring_ascii if base.ensure_ascii else json.encoder.encode_basestring
    make: Callable[[Any, int], list[str]] = c_make_encoder(
        markers, base.default, strings, None, base.key_separator, base.item_separator, base.sort_keys,
        base.skipkeys, base.allow_nan)
    return make
