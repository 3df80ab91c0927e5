"""Items out of a source spec: the one entry point (`iter_items`) and the rules every kind shares.

Each source kind (see `kind.SourceKind` and `registry`) yields `(where, payload)` pairs, where `where`
names the item for error messages ("line 5 of /data/x.csv"). This module turns them into `Item`s and
applies the key and priority rules once, so every kind gets the same identity semantics and the same
words in its errors. Everything is a generator: a source is never held in memory as a whole, and
errors (a missing file, a malformed row) surface on the first `next()`, not when `iter_items` is
called.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_batch.errors import SourceError, field_ref
from agentic_batch.jsontext import chunk_encoder, one_shot_encoder
from agentic_batch.priority import Priority
from agentic_batch.sources.registry import SourceSpec, get_source_kind


@dataclass(frozen=True)
class Item:
    """One item of a workload; becomes one unit."""

    key: str  # stable identity of the item (dedupe/resume)
    payload: dict[str, Any]  # JSON-able dict
    priority: int | None  # from spec.priority_field via Priority.parse_rank, else None


def iter_items(spec: SourceSpec, *, cwd: Path | None = None) -> Iterator[Item]:
    """Stream the items of `spec` in a deterministic order (the first one is used for a test run)."""
    for key, payload, priority in iter_keyed(spec, cwd=cwd):
        yield Item(key, payload, priority)


def iter_keyed(spec: SourceSpec, *, cwd: Path | None = None) -> Iterator[tuple[str, dict[str, Any], int | None]]:
    """`iter_items` as plain (key, payload, priority) tuples: a bulk create makes no `Item` per item."""
    base = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
    resolved = resolve_spec(spec, base)
    kind = get_source_kind(resolved.kind)
    pairs = kind.iterate(kind.options(resolved), base)
    if not resolved.key and kind.natural_key is None and not resolved.priority_field:
        # Keyed by content, no priority field (most big sources): `item_key` and `item_priority` would
        # only look those up again for every item; `content_key` inline, for the same reason.
        if _KEY_CHUNKS is None:
            for _, payload in pairs:
                yield content_key(payload), payload, None
            return
        make, sha256 = _KEY_CHUNKS, _SHA256
        for _, payload in pairs:
            try:
                text = "".join(make(payload, 0))
            except RecursionError:  # a circular structure (from a python source): the dump's ValueError
                text = _KEY_JSON(payload)
            yield sha256(text.encode("utf-8")).hexdigest()[:32], payload, None
        return
    for where, payload in pairs:
        yield item_key(resolved, where, payload), payload, item_priority(resolved, where, payload)


# ---------------------------------------------------------------------------------------------------
# keys and priorities


#: `json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)`, made once: `dumps` with
#: options builds an encoder per call, a tenth of a 100,000-item create (`one_shot_encoder`: and no
#: Python frames per call either).
_KEY_JSON = one_shot_encoder(sort_keys=True, separators=(",", ":"), default=str)
_KEY_CHUNKS = chunk_encoder(sort_keys=True, separators=(",", ":"), default=str)
_SHA256 = hashlib.sha256


def content_key(payload: dict[str, Any]) -> str:
    """A key for items without a natural one: the same content always gives the same key."""
    return _SHA256(_KEY_JSON(payload).encode("utf-8")).hexdigest()[:32]


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
    natural = get_source_kind(spec.kind).natural_key
    if natural is not None:
        return str(payload[natural])
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
# spec resolution and description


def resolve_spec(spec: SourceSpec, cwd: Path) -> SourceSpec:
    """A copy with every path absolute, because the executor reads the source elsewhere, later (each
    kind says which of its fields are paths: see its `resolve`). Idempotent."""
    kind = get_source_kind(spec.kind)
    resolved = kind.resolve(kind.options(spec), Path(os.path.abspath(cwd)))
    return spec.model_copy(update=resolved.model_dump())


def describe_source(spec: SourceSpec) -> str:
    """A short human line for listings and confirmations, e.g. 'files **/*.py under /src'."""
    kind = get_source_kind(spec.kind)
    return kind.describe(kind.options(spec))
