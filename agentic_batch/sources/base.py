"""Items out of a source spec: the one entry point (`iter_items`) and the rules every kind shares.

Each source kind lives in its own module and yields `(where, payload)` pairs, where `where` names the
item for error messages ("line 5 of /data/x.csv"). This module turns them into `Item`s and applies
the key and priority rules once, so every kind gets the same identity semantics and the same words in
its errors. Everything is a generator: a source is never held in memory as a whole, and errors (a
missing file, a malformed row) surface on the first `next()`, not when `iter_items` is called.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agentic_batch.errors import SourceError, field_ref
from agentic_batch.spec import Priority, SourceSpec

#: What a source kind yields: a human name for the item's place, and its payload.
RawItem = tuple[str, dict[str, Any]]

_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Item:
    """One item of a workload; becomes one unit."""

    key: str  # stable identity of the item (dedupe/resume)
    payload: dict[str, Any]  # JSON-able dict
    priority: int | None  # from spec.priority_field via Priority.parse_rank, else None


def iter_items(spec: SourceSpec, *, cwd: Path | None = None) -> Iterator[Item]:
    """Stream the items of `spec` in a deterministic order (the first one is used for a test run)."""
    base = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
    resolved = resolve_spec(spec, base)
    for where, payload in _raw_items(resolved, base):
        yield Item(
            key=item_key(resolved, where, payload),
            payload=payload,
            priority=item_priority(resolved, where, payload),
        )


def _raw_items(spec: SourceSpec, cwd: Path) -> Iterator[RawItem]:
    """Dispatch to the kind's module; imported lazily so e.g. a CSV job never imports SQLAlchemy."""
    if spec.kind == "files":
        from agentic_batch.sources.files import iter_files

        return iter_files(spec)
    if spec.kind == "csv":
        from agentic_batch.sources.tabular import iter_csv

        return iter_csv(spec)
    if spec.kind == "json":
        from agentic_batch.sources.json_stream import iter_json

        return iter_json(spec)
    if spec.kind == "jsonl":
        from agentic_batch.sources.json_stream import iter_jsonl

        return iter_jsonl(spec)
    if spec.kind == "sql":
        from agentic_batch.sources.sql import iter_sql

        return iter_sql(spec)
    if spec.kind == "python":
        from agentic_batch.sources.python_source import iter_python

        return iter_python(spec, cwd)
    raise SourceError(f"unknown source kind {spec.kind!r}")  # pragma: no cover - Literal-checked


# ---------------------------------------------------------------------------------------------------
# keys and priorities


def content_key(payload: dict[str, Any]) -> str:
    """A key for items without a natural one: the same content always gives the same key."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def item_key(spec: SourceSpec, where: str, payload: dict[str, Any]) -> str:
    """`spec.key` names the field holding the identity; else the path for files, a hash otherwise."""
    if spec.key:
        if spec.key not in payload:
            raise SourceError(
                f"{where} has no field {spec.key!r} to use as the key; its fields are {_fields(payload)}",
                hint=f"{field_ref('source.key')} must name a field every item has, or leave it out to key by content",
            )
        value = payload[spec.key]
        if value is None or str(value).strip() == "":
            raise SourceError(
                f"{where} has an empty key field {spec.key!r}",
                hint=f"every item needs a non-empty key; leave {field_ref('source.key')} out to key by content",
            )
        return str(value)
    if spec.kind == "files":
        return str(payload["relative_path"])
    return content_key(payload)


def item_priority(spec: SourceSpec, where: str, payload: dict[str, Any]) -> int | None:
    """A unit priority from `spec.priority_field`; a missing or bad value is an error, not a default."""
    field = spec.priority_field
    if not field:
        return None
    if field not in payload:
        raise SourceError(
            f"{where} has no field {field!r} for the priority; its fields are {_fields(payload)}",
            hint=f"{field_ref('source.priority_field')} must name a field every item has",
        )
    try:
        return Priority.parse_rank(payload[field])
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}", hint="use low, normal, high, critical or an integer") from None


def _fields(payload: dict[str, Any]) -> str:
    names = list(payload)
    shown = ", ".join(repr(n) for n in names[:20])
    return (shown + ", ...") if len(names) > 20 else (shown or "(none)")


# ---------------------------------------------------------------------------------------------------
# values


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


# ---------------------------------------------------------------------------------------------------
# files on disk


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


# ---------------------------------------------------------------------------------------------------
# spec resolution and description


def resolve_spec(spec: SourceSpec, cwd: Path) -> SourceSpec:
    """A copy with every path absolute, because the executor reads the source elsewhere, later.

    files: root defaults to `cwd`; an absolute glob moves its non-glob prefix into root, and leading
    `..` segments of a relative glob move into root too. csv/json/jsonl: path. sql: the file of a
    sqlite URL. python: `function` is left alone (it is resolved against cwd when read); root, if
    given, is made absolute. Idempotent.
    """
    base = os.path.abspath(cwd)
    update: dict[str, Any] = {}
    if spec.root:
        update["root"] = _absolute(spec.root, base)
    if spec.kind == "files" and spec.glob:
        root = update.get("root", base)
        glob = os.path.expanduser(spec.glob)
        if glob.startswith("/"):
            root, glob = _split_static_prefix(glob)
        else:
            parts = [p for p in glob.split("/") if p not in ("", ".")]
            while parts and parts[0] == "..":
                root = os.path.dirname(root)
                parts.pop(0)
            glob = "/".join(parts)
        update["root"], update["glob"] = root, glob
    if spec.kind in ("csv", "json", "jsonl") and spec.path:
        update["path"] = _absolute(spec.path, base)
    if spec.kind == "sql" and spec.db_url:
        update["db_url"] = _absolute_sqlite_url(spec.db_url, base)
    return spec.model_copy(update=update)


def _absolute(path: str, base: str) -> str:
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def _split_static_prefix(glob: str) -> tuple[str, str]:
    """'/data/**/*.py' -> ('/data', '**/*.py'); a glob without wildcards -> (parent, name)."""
    parts = glob.split("/")
    first_magic = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts) - 1)
    root = os.path.normpath("/".join(parts[:first_magic]) or "/")
    return root, "/".join(p for p in parts[first_magic:] if p not in ("", "."))


def _absolute_sqlite_url(db_url: str, base: str) -> str:
    """Make the file of a `sqlite:///relative.db` URL absolute; other URLs are returned unchanged.

    Parsed with SQLAlchemy's own URL parser (the one that will open it), so `file:` prefixes, query
    strings and percent-escapes are read the same way here and there. A `file:` URI prefix is
    dropped: the sql source opens every SQLite file as its own read-only URI anyway.
    """
    from sqlalchemy.engine import make_url  # lazily: a csv job never imports SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError):
        return db_url  # the sql source reports an invalid URL in its own words
    database = (url.database or "").removeprefix("file:")
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return db_url
    return url.set(database=_absolute(database, base)).render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    """The URL as it may be shown in messages and listings (password replaced by ***)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        if "@" not in (parsed.host or ""):  # an unescaped '@' in a password ends up in the host
            return parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        pass
    # Not parseable (a bad port, say): mask everything between '://user:' and the last '@' anyway.
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at):
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def describe_source(spec: SourceSpec) -> str:
    """A short human line for listings and confirmations, e.g. 'files **/*.py under /src'."""
    if spec.kind == "files":
        return f"files {spec.glob} under {spec.root or 'the working directory'}"
    if spec.kind == "csv":
        sep = f" (delimiter {spec.delimiter!r})" if spec.delimiter != "," else ""
        return f"csv {spec.path}{sep}"
    if spec.kind == "json":
        return f"json {spec.path}" + (f" at {spec.json_path}" if spec.json_path else "")
    if spec.kind == "jsonl":
        return f"jsonl {spec.path}"
    if spec.kind == "sql":
        query = " ".join((spec.query or "").split())
        query = query if len(query) <= 60 else query[:57] + "..."
        return f"sql {query!r} on {hide_password(spec.db_url or '')}"
    args = ", ".join(f"{k}={v!r}" for k, v in spec.args.items())
    return f"python {spec.function}" + (f"({args})" if args else "")
