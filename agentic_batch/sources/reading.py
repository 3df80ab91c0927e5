"""What every source kind's reader shares: opening a data file, and turning values into JSON."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from agentic_batch.errors import SourceError


def to_jsonable(value: Any, *, strict: bool = False) -> Any:
    """Turn a database or Python value into plain JSON types, losslessly where it can.

    Decimals become int when integral, float when the float prints back to the same number, else
    str; non-finite numbers become strings (PostgreSQL JSONB rejects NaN); datetimes ISO 8601; bytes
    base64; UUIDs str; timedelta str ("1 day, 2:00:00"). With `strict` an unknown type raises
    TypeError (a Python source's bug should surface); otherwise it becomes `str(value)`.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, strict=strict)
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str) else str(k)): to_jsonable(v, strict=strict) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, strict=strict) for v in value]
    if strict:
        raise TypeError(f"a {type(value).__name__} value is not JSON-able")
    return str(value)


@contextmanager
def open_source_file(path: str, kind: str) -> Iterator[TextIO]:
    """Open a csv/json/jsonl file as UTF-8 text (a BOM is dropped), with errors a user can act on."""
    if not os.path.exists(path):
        raise SourceError(
            f"{kind} file {path} does not exist",
            hint=f"check the --{kind} path; a relative path resolves against the working directory",
        )
    if os.path.isdir(path):
        raise SourceError(f"{kind} path {path} is a directory, not a file", hint="use a files source")
    try:
        handle = open(path, encoding="utf-8-sig", newline="" if kind == "csv" else None)  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot open {kind} file {path}: {exc.strerror}") from None
    with handle:
        try:
            yield handle
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{kind} file {path} is not valid UTF-8 text ({exc.reason})",
                hint="convert it to UTF-8, e.g. with iconv",
            ) from None
