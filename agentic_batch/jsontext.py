"""JSON text made fast where it is made per item (a bulk create encodes every item twice)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def one_shot_encoder(**options: Any) -> Callable[[Any], str]:
    """`json.JSONEncoder(**options).encode`, calling the C encoder straight away: `encode` builds that
    encoder anew and goes through two Python frames for every value, half the time of encoding a
    small item. The same text (`encode` makes the same C encoder for a one-shot dump). Circular
    structures are still refused: the markers are reset after a failed call."""
    from json.encoder import c_make_encoder  # type: ignore[attr-defined]

    base = json.JSONEncoder(**options)
    if c_make_encoder is None or base.indent is not None:  # no C accelerator: the plain method
        return base.encode
    markers: dict[int, Any] | None = {} if base.check_circular else None
    ensure_ascii = base.ensure_ascii
    make = c_make_encoder(markers, base.default,
                          json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring,
                          None, base.key_separator, base.item_separator, base.sort_keys, base.skipkeys,
                          base.allow_nan)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return base.encode(value)
        try:
            return "".join(make(value, 0))
        except BaseException:
            if markers:
                markers.clear()
            raise

    return encode
