"""`--json` on stdout: still valid JSON, with every control character escaped. Without Rich or
pydantic, so the CLI's direct reads (`cli.quick`) print it as the full CLI does (`output.print_json`)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

# What JSON itself leaves raw with ensure_ascii=False: DEL, C1 controls (U+009B is a CSI to some
# terminals) and bidi overrides. Outside strings JSON is ASCII, so these are always inside a string.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def print_json_data(data: Any) -> None:
    """Plain JSON data (dicts, lists, strings, numbers; anything else as its str()) on stdout."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")
    sys.stdout.flush()
