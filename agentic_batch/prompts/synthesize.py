"""Turn a one-line intent (`--intent "fix the typos"`) into a full worker prompt template.

The template is shown to the user at create time and stored with the job, so it must be readable,
editable and deterministic (the same intent, kind and fields always give the same text: a preview the
user approved is what runs). It is plain text, not a model call: an LLM-assisted draft, if wanted, goes
through a worker like any other unit.

Everything taken from the user (the intent, field names) is inserted so that braces in it stay
literal: prose through `{% raw %}` blocks, field names as escaped Jinja string literals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentic_batch.errors import PromptError

RECORD_KINDS = frozenset({"csv", "json", "jsonl", "sql", "python"})

#: Words Jinja parses as literals or operators, never as a variable name.
_JINJA_WORDS = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else"}
)
#: Names `{{ name }}` would resolve to something other than the item's field (context, loop helpers).
_RESERVED = _JINJA_WORDS | {"item", "row", "loop", "self", "unit", "job", "prompt"}

#: Field names a files source may use for the relative path and size, in order of preference.
_RELPATH_FIELDS = ("relpath", "rel_path", "relative_path")
_SIZE_FIELDS = ("size", "size_bytes", "bytes")

_FAILED_RULE = (
    'If the task cannot be done, say so plainly: answer with one line starting with "FAILED:" '
    "followed by the reason."
)


def literal(text: str) -> str:
    """Template text that renders exactly `text`, whatever braces it contains.

    `{% raw %}` ends at the first `{% endraw %}` (in any spacing), so text is cut at every `{%`, each
    piece wrapped in raw, and the `{%` itself emitted as a string expression. Text with no `{` needs
    no wrapping and stays readable.
    """
    if "{" not in text:
        return text
    pieces = text.split("{%")
    wrapped = [f"{{% raw %}}{piece}{{% endraw %}}" if "{" in piece else piece for piece in pieces]
    return '{{ "{%" }}'.join(wrapped)


def field_ref(name: str, accessor: str = "row") -> str:
    """`{{ row["name"] }}` with the name as a Jinja string literal, so any column name works.

    JSON string escaping is valid Jinja (Jinja decodes string literals with Python's unicode-escape);
    non-ASCII stays as is so astral characters are not split into surrogate escapes.
    """
    return "{{ " + accessor + "[" + json.dumps(name, ensure_ascii=False) + "] }}"


def _record_accessor(fields: Sequence[str]) -> str | None:
    """`row`, or `item` when a field named `row` shadows it; None when both are shadowed."""
    return next((name for name in ("row", "item") if name not in fields), None)


def _top_level_ref(name: str) -> str:
    """`{{ name }}` when the name is a plain identifier the context does not shadow, else a subscript."""
    if name.isidentifier() and name.isascii() and name not in _RESERVED:
        return "{{ " + name + " }}"
    return field_ref(name)


def synthesize(intent: str, source_kind: str, fields: Sequence[str]) -> str:
    """A worker prompt template for `intent` over items of `source_kind` with these `fields`.

    `fields` are the first item's field names (in order); they decide which references the template
    makes, so the result renders against items shaped like that first one.
    """
    task = intent.strip()
    if not task:
        raise PromptError("the intent is empty", hint="say in one sentence what to do with each item")
    fields = [str(name) for name in fields]
    if source_kind == "files":
        return _files_template(task, fields)
    if source_kind in RECORD_KINDS:
        return _record_template(task, fields)
    raise PromptError(
        f"cannot write a prompt for source kind {source_kind!r}",
        hint="source kinds are files, " + ", ".join(sorted(RECORD_KINDS)),
    )


def _task_paragraph(task: str) -> str:
    return "Task:\n" + literal(task) + "\n"


def _files_template(task: str, fields: list[str]) -> str:
    path_ref = _top_level_ref("path") if not fields or "path" in fields else None
    if path_ref is None:  # not a files-shaped item after all: describe it like a record
        return _record_template(task, fields)
    relpath = next((name for name in _RELPATH_FIELDS if name in fields), None)
    size = next((name for name in _SIZE_FIELDS if name in fields), None)
    file_lines = [f"File to process: {path_ref}"]
    if relpath:
        file_lines.append(f"Relative path: {_top_level_ref(relpath)}")
    if size:
        file_lines.append(f"Size: {_top_level_ref(size)} bytes")
    parts = [
        (
            "You are one worker of many in a batch job. Each worker handles exactly one file; "
            "this prompt is about yours.\n"
        ),
        _task_paragraph(task),
        "\n".join(file_lines) + "\n",
        (
            "Work only on this file. Do not modify, create, rename or delete any other file of the "
            "batch: other workers are processing them at the same time.\n"
            "If the task asks for changes, make them in place in this file.\n"
        ),
        "When you are done, reply with a short final message: what you did, or that nothing was "
        "needed and why. " + _FAILED_RULE + "\n",
    ]
    return "\n".join(parts)


def _record_template(task: str, fields: list[str]) -> str:
    if fields:
        record = "The record:\n" + "\n".join(_record_lines(fields))
    else:
        record = "The record (JSON):\n{{ item | tojson }}"
    parts = [
        (
            "You are one worker of many in a batch job. Each worker handles exactly one record; "
            "this prompt is about yours.\n"
        ),
        _task_paragraph(task),
        record + "\n",
        "Answer with the result for this record only: no preamble, no restating of the task or the "
        "record. " + _FAILED_RULE + "\n",
    ]
    return "\n".join(parts)


def _record_lines(fields: list[str]) -> list[str]:
    """One `- name: value` line per field; labels flattened to one line, references exact.

    Payload fields shadow `row` and `item` (see `template_context`), so with a field named `row` the
    subscripts go through `item`; with both, plain-identifier fields are referenced by name and the
    rest cannot be reached and are left out.
    """
    accessor = _record_accessor(fields)
    lines = []
    for name in fields:
        label = literal(" ".join(name.splitlines()) or name)
        if accessor is not None:
            lines.append(f"- {label}: {field_ref(name, accessor)}")
        elif name in ("row", "item") or (name.isidentifier() and name.isascii() and name not in _RESERVED):
            lines.append(f"- {label}: {{{{ {name} }}}}")
    return lines
