"""Structured output: ask the agent for JSON matching a schema, parse it, validate it.

Works for every worker because it only touches the prompt (an instruction appended) and the output
text (the JSON found in it). An invalid answer is a retryable error whose message is fed back to the
next attempt, so the agent learns what was wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.base import ErrorClass, UnitOutcome

SCHEMA_ERROR = "output does not match the schema"
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n?```", re.S)


def _validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise InvalidSpec("--output-schema needs the jsonschema package",
                          hint="pip install 'agentic-batch[schema]'") from None
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_schema(schema: Any) -> None:
    """Create time: the schema must itself be a valid JSON Schema."""
    if not isinstance(schema, dict):
        raise InvalidSpec("--output-schema must hold a JSON object (a JSON Schema)")
    import jsonschema

    try:
        _validator(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidSpec(f"--output-schema is not a valid JSON Schema: {exc.message}") from None


def instructions(schema: dict[str, Any], feedback: str | None) -> str:
    text = ("\n\nReply with a single JSON value and nothing else (no prose, no code fence) that validates "
            "against this JSON Schema:\n" + json.dumps(schema, indent=2, ensure_ascii=False))
    if feedback:
        text += f"\n\nYour previous answer was rejected: {feedback}\nFix that and answer again."
    return text


def extract_json(text: str) -> Any:
    """The JSON in an answer: the whole text, a fenced block, or the outermost {...} / [...] span."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("the answer contains no JSON")


def apply_schema(outcome: UnitOutcome, schema: dict[str, Any]) -> UnitOutcome:
    """Parse and validate a successful outcome's output; invalid output becomes a retryable error."""
    if not outcome.ok:
        return outcome
    try:
        data = extract_json(outcome.output or "")
    except ValueError as exc:
        return _invalid(outcome, str(exc))
    errors = sorted(_validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return _invalid(outcome, f"at {where}: {first.message}")
    outcome.data = data
    return outcome


def _invalid(outcome: UnitOutcome, why: str) -> UnitOutcome:
    outcome.error = f"{SCHEMA_ERROR}: {why}"
    outcome.error_class = ErrorClass.retryable
    return outcome
