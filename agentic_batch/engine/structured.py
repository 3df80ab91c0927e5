"""Structured output: ask the agent for JSON matching a schema, parse it, validate it.

Works for every worker because it only touches the prompt (an instruction appended) and the output
text (the JSON found in it). An invalid answer is a retryable error whose message is fed back to the
next attempt, so the agent learns what was wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitOutcome

SCHEMA_ERROR = "output does not match the schema"
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n?```", re.S)


def _validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise InvalidSpec(f"{field_ref('output_schema')} needs the jsonschema package",
                          hint="pip install 'agentic-batch[schema]'") from None
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_schema(schema: Any, field: str = "output_schema") -> None:
    """Create time: the schema must be a valid JSON Schema whose every `$ref` resolves.

    `field` names it in the caller's words (`--output-schema` on the CLI, `output_schema` over REST
    and MCP). jsonschema resolves references lazily, so an unresolvable one would otherwise surface
    only when the first unit's answer is validated.
    """
    if not isinstance(schema, dict):
        raise InvalidSpec(f"{field} must hold a JSON object (a JSON Schema)")
    validator = _validator(schema)
    import jsonschema

    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidSpec(f"{field} is not a valid JSON Schema: {exc.message}") from None
    from referencing.exceptions import Unresolvable

    try:
        _resolve_refs(schema, validator)
    except Unresolvable as exc:
        raise InvalidSpec(f"{field} has a $ref that does not resolve: {_ref_text(exc)!r}",
                          hint="refer to '#/$defs/NAME' inside the schema; remote references are not fetched") from None
    except RecursionError:
        raise InvalidSpec(f"{field} is nested too deeply") from None


def _ref_text(exc: Exception) -> str:
    ref = str(getattr(exc, "ref", exc))
    return "#" + ref if ref.startswith("/") else ref


def _resolve_refs(schema: dict[str, Any], validator: Any) -> None:
    """Look up every `$ref` of the schema the way validation would, raising Unresolvable."""
    from jsonschema_specifications import REGISTRY
    from referencing.jsonschema import specification_with

    specification = specification_with(validator.META_SCHEMA.get("$schema", ""))
    root = REGISTRY.resolver_with_root(specification.create_resource(schema))

    def walk(node: Any, resolver: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$id"), str) and node is not schema:
                resolver = resolver.in_subresource(specification.create_resource(node))
            ref = node.get("$ref")
            if isinstance(ref, str):
                resolver.lookup(ref)
            for key, value in node.items():
                if key not in ("enum", "const", "examples", "default"):
                    walk(value, resolver)
        elif isinstance(node, list):
            for item in node:
                walk(item, resolver)

    walk(schema, root)


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
    outcome.error_kind = FailureKind.schema_invalid
    return outcome
