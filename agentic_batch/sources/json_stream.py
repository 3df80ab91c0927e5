"""`json` and `jsonl` sources, streamed.

A JSON array file can be a gigabyte, so we never `json.load` it. `_Cursor` keeps only the unread tail
of the file in a buffer and decodes one array element at a time with `JSONDecoder.raw_decode`; when
an element may be cut at the end of the buffer it reads more (at least doubling, so a big element
costs linear time) and decodes again. `json_path` ('a.b') walks object keys the same way: the
values of other keys are skipped element by element, so they are never held whole either.

NaN and Infinity are rejected: they are not JSON, and the PostgreSQL store's JSONB refuses them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, TextIO

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.errors import SourceError, field_ref
from agentic_batch.flags import SOURCE_PANEL, Flag
from agentic_batch.sources.kind import PATH_DOC, RawItem, SourceKind, absolute
from agentic_batch.sources.reading import open_source_file

#: Characters read per chunk (tests lower it to prove streaming).
CHUNK_CHARS = 1 << 16
#: An error this close to the end of the buffer may only mean the value continues in the next chunk.
_CUT_MARGIN = 64
_TOO_DEEP = "JSON nested too deeply to read"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: Characters that may continue a number: a buffer ending in these may hold only part of it.
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _kind_of(first_char: str) -> str:
    """What a JSON value starting with this character is, for messages."""
    named = {"{": "an object", "[": "an array", '"': "a string", "t": "a boolean", "f": "a boolean"}
    if first_char in named:
        return named[first_char]
    if first_char == "n":
        return "null"
    if first_char == "":
        return "nothing (the file ends)"
    return "a number" if first_char in "-0123456789" else f"{first_char!r}"


class _Cursor:
    """A read position over a text file that keeps only the unread tail in memory."""

    def __init__(self, handle: TextIO, path: str) -> None:
        self.handle = handle
        self.path = path
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.value_start = 0  # where the last decoded value began in `buf`
        self._lines_dropped = 0  # newlines in the text already dropped from `buf`
        self._col_dropped = 0  # characters after the last dropped newline

    def fill(self, at_least: int = 0) -> None:
        """Drop the consumed text and read at least one more chunk; sets `eof` at the end."""
        if self.eof:
            return
        if self.pos:
            dropped = self.buf[: self.pos]
            newlines = dropped.count("\n")
            if newlines:
                self._lines_dropped += newlines
                self._col_dropped = len(dropped) - dropped.rfind("\n") - 1
            else:
                self._col_dropped += len(dropped)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        try:
            chunk = self.handle.read(max(at_least, CHUNK_CHARS))
        except UnicodeDecodeError as exc:
            line, _ = self.line_col(len(self.buf))
            raise SourceError(
                f"json file {self.path} is not valid UTF-8 text near line {line} ({exc.reason})",
                hint="convert it to UTF-8, e.g. with iconv",
            ) from None
        if chunk:
            self.buf += chunk
        else:
            self.eof = True

    def line_col(self, index: int) -> tuple[int, int]:
        """1-based line and column of `buf[index]` in the whole file."""
        head = self.buf[:index]
        newlines = head.count("\n")
        if newlines:
            return self._lines_dropped + newlines + 1, index - head.rfind("\n")
        return self._lines_dropped + 1, self._col_dropped + index + 1

    def error(self, message: str, index: int | None = None, hint: str | None = None) -> SourceError:
        line, col = self.line_col(self.pos if index is None else index)
        return SourceError(f"{message} at line {line} column {col} of {self.path}", hint=hint)

    def peek(self) -> str:
        """Skip whitespace and return the next character without consuming it ('' at the end)."""
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self.fill()

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            raise self.error(f"malformed JSON: expected {what} but found {_kind_of(found)}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the JSON value at the cursor (after `peek`), reading more while it may be cut."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                maybe_cut = (
                    exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - _CUT_MARGIN
                )
                if self.eof or not maybe_cut:
                    raise self.error(f"malformed JSON: {exc.msg}", exc.pos) from None
                self.fill(len(self.buf))
                continue
            except ValueError as exc:  # NaN / Infinity
                raise self.error(f"malformed JSON: {exc}") from None
            except RecursionError:
                raise self.error(_TOO_DEEP) from None
            if self.eof or not self._number_may_continue(end):
                self.value_start, self.pos = self.pos, end
                return value
            self.fill(len(self.buf))  # a number may continue in the next chunk

    def _number_may_continue(self, end: int) -> bool:
        """True when the value just decoded may be a number cut by the end of the buffer.

        `raw_decode` stops a number at the first character that cannot extend it *yet*: with the
        buffer ending in `1.` or `2e-` it returns 1 or 2 and leaves `.`/`e-`, which the next chunk
        would have completed (`1.5`, `2e-3`). So when everything from the end of the value to the
        end of the buffer could still belong to a number, read more and decode again.
        """
        if end >= len(self.buf):
            return True
        if self.buf[self.pos] not in "-0123456789":
            return False
        return _NUMBER_TAIL.match(self.buf, end).end() == len(self.buf)  # type: ignore[union-attr]

    def skip_value(self) -> None:
        """Consume one value; arrays and objects element by element, so a huge one is never held."""
        first = self.peek()
        if first == "" or first not in "[{":
            self.value()
            return
        close = "]" if first == "[" else "}"
        self.pos += 1
        if self.peek() == close:
            self.pos += 1
            return
        while True:
            if first == "{":
                if self.peek() != '"':
                    raise self.error("malformed JSON: expected a property name in double quotes")
                self.value()
                self.expect(":", "':'")
            self.skip_value()
            found = self.peek()
            if found not in (",", close):
                raise self.error(f"malformed JSON: expected ',' or '{close}' but found {_kind_of(found)}")
            self.pos += 1
            if found == close:
                return


def _path_steps(json_path: str | None) -> list[str]:
    """'a.b' -> ['a', 'b']; a leading '$' or '$.' is accepted and ignored."""
    if not json_path:
        return []
    text = json_path.strip()
    text = text.removeprefix("$")
    text = text.removeprefix(".")
    if not text:
        return []
    steps = text.split(".")
    if any(step == "" for step in steps):
        raise SourceError(f"invalid json_path {json_path!r}", hint="use dotted object keys, e.g. data.items")
    return steps


def _enter_key(cursor: _Cursor, steps: list[str], depth: int, json_path: str) -> None:
    """Move the cursor to the value of `steps[depth]` in the object at the cursor."""
    key = steps[depth]
    where = "the top level" if depth == 0 else repr(".".join(steps[:depth]))
    first = cursor.peek()
    if first != "{":
        raise cursor.error(
            f"json_path {json_path!r}: {where} is {_kind_of(first)}, not an object",
            hint="json_path names object keys from the top level down to the array, e.g. data.items",
        )
    cursor.pos += 1
    found = cursor.peek()
    while found != "}":
        if found != '"':
            raise cursor.error("malformed JSON: expected a property name in double quotes")
        name = cursor.value()
        cursor.expect(":", "':'")
        if name == key:
            return
        cursor.skip_value()
        found = cursor.peek()
        if found == ",":
            cursor.pos += 1
            found = cursor.peek()
        elif found != "}":
            raise cursor.error(f"malformed JSON: expected ',' or '}}' but found {_kind_of(found)}")
    raise SourceError(
        f"json_path {json_path!r}: key {key!r} not found in {where} of {cursor.path}",
        hint=f"check the spelling and nesting of {field_ref('source.json_path')}",
    )


class JsonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Flag(SOURCE_PANEL, name="--json", help="JSON file holding an array of objects (a bare "
                                                                "--json instead prints the result as JSON).")] = Field(
        description=PATH_DOC)
    json_path: Annotated[str | None, Flag(SOURCE_PANEL, help="Dotted path to the array inside the JSON file: "
                                                             "'data.items'.")] = Field(
        default=None,
        description="dotted path to the array inside the JSON document: 'data.items' (default: top-level array)")


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Annotated[str, Flag(SOURCE_PANEL, name="--jsonl", help="JSON Lines file, one object per line.")] = Field(
        description=PATH_DOC)


def iter_json(options: JsonOptions, cwd: Path | None = None) -> Iterator[RawItem]:
    """Yield each object of the top-level array, or of the array at `options.json_path`."""
    path = options.path
    steps = _path_steps(options.json_path)
    label = ".".join(steps)
    with open_source_file(path, "json") as handle:
        cursor = _Cursor(handle, path)
        cursor.fill()
        if cursor.peek() == "":
            raise SourceError(
                f"json file {path} is empty", hint="it must hold an array of objects: [{...}, ...]"
            )
        try:
            for depth in range(len(steps)):
                _enter_key(cursor, steps, depth, options.json_path or "")
        except RecursionError:
            raise cursor.error(_TOO_DEEP) from None
        first = cursor.peek()
        if first != "[":
            where = f"json_path {options.json_path!r} in {path}" if steps else f"json file {path}"
            name = field_ref("source.json_path")
            hint = f"point {name} at an array" if steps else f"give {name} to the array inside it"
            raise cursor.error(f"{where} holds {_kind_of(first)}, not an array", hint=hint)
        cursor.pos += 1
        index = 0
        found = cursor.peek()
        while found != "]":
            if found == "":
                raise cursor.error("malformed JSON: the file ends inside the array")
            element = cursor.value()
            if not isinstance(element, dict):
                line, _ = cursor.line_col(cursor.value_start)
                raise SourceError(
                    f"element {label}[{index}] of {path} (line {line}) is "
                    f"{_kind_of(cursor.buf[cursor.value_start])}, not an object",
                    hint="each array element becomes one item and must be a JSON object {...}",
                )
            yield f"element {label}[{index}] of {path}", element
            index += 1
            found = cursor.peek()
            if found == ",":
                cursor.pos += 1
                found = cursor.peek()
                if found == "]":
                    raise cursor.error("malformed JSON: a trailing comma before ']'")
            elif found == "":
                raise cursor.error("malformed JSON: the file ends inside the array")
            elif found != "]":
                raise cursor.error(f"malformed JSON: expected ',' or ']' but found {_kind_of(found)}")
        cursor.pos += 1
        if not steps and cursor.peek() != "":
            raise cursor.error("malformed JSON: extra data after the top-level array")


def iter_jsonl(options: JsonlOptions, cwd: Path | None = None) -> Iterator[RawItem]:
    """Yield one object per non-blank line; the place of each item is its line number."""
    path = options.path
    scan = _DECODER.scan_once  # type: ignore[attr-defined]
    with open_source_file(path, "jsonl") as handle:
        line_number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"jsonl file {path} is not valid UTF-8 text near line {line_number + 1} ({exc.reason})",
                    hint="convert it to UTF-8, e.g. with iconv",
                ) from None
            if not line:
                return
            line_number += 1
            text = line.strip()
            if not text:
                continue
            try:
                try:  # the scanner itself: `decode` adds two frames and two whitespace scans (none is left)
                    value, end = scan(text, 0)
                except StopIteration:
                    end = -1
                if end != len(text):  # malformed, or more after the value: `decode` says how (json.loads
                    value = _DECODER.decode(text)  # would build a decoder per line)
            except json.JSONDecodeError as exc:
                column = exc.colno + len(line) - len(line.lstrip())
                raise SourceError(
                    f"malformed JSON on line {line_number} of {path} (column {column}): {exc.msg}",
                    hint="each line must hold exactly one JSON object",
                ) from None
            except (ValueError, RecursionError) as exc:
                reason = _TOO_DEEP if isinstance(exc, RecursionError) else str(exc)
                raise SourceError(f"malformed JSON on line {line_number} of {path}: {reason}") from None
            if not isinstance(value, dict):
                raise SourceError(
                    f"line {line_number} of {path} holds {_kind_of(text[0])}, not a JSON object",
                    hint="each line must hold one JSON object {...}",
                )
            yield f"line {line_number} of {path}", value


KINDS = (
    SourceKind(name="json", items="one item per object of a top-level array (or of the array at json_path)",
               options_model=JsonOptions, iterate=iter_json,
               resolve=lambda o, cwd: o.model_copy(update={"path": absolute(o.path, cwd)}),
               describe=lambda o: f"json {o.path}" + (f" at {o.json_path}" if o.json_path else "")),
    SourceKind(name="jsonl", items="one item per line (a JSON object)", options_model=JsonlOptions,
               iterate=iter_jsonl, resolve=lambda o, cwd: o.model_copy(update={"path": absolute(o.path, cwd)}),
               describe=lambda o: f"jsonl {o.path}"),
)
