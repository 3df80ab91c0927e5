"""What the OpenAPI document says beyond what FastAPI derives from the routes.

A client generated from `/openapi.json` (or a fuzzer reading it, as schemathesis does) should meet
no answer the document does not name: every error is `{"error", "hint"}` with the statuses listed
here, and query values the service checks itself (statuses, levels, formats) are described with the
same words it accepts. These additions only document; the service still validates with its own
one-line messages (a pattern failure from FastAPI would read as a regular expression).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong, in one line."},
                   "hint": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "What to do about it."}},
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_WRITES = ("post", "put", "patch", "delete")


def _any_case(word: str) -> str:
    return "".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch for ch in word)


def word_list(words: Iterable[str]) -> dict[str, Any]:
    """Query-parameter schema extras for a comma list of these words, any case (`running,paused`).

    Exactly what `service.browse.parse_statuses` accepts: entries split on commas, each stripped,
    empty ones ignored (so '' and 'running,' are fine).
    """
    entry = r"\s*(?:" + "|".join(_any_case(w) for w in words) + r")?\s*"
    return {"pattern": rf"^{entry}(?:,{entry})*$", "examples": [",".join(list(words)[:2]).lower()]}


def one_of(words: Iterable[str]) -> dict[str, Any]:
    return {"enum": list(words)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def document_errors(schema: dict[str, Any]) -> None:
    """Add the error answers each operation can give, all with the Error body."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "head", *_WRITES):
                continue
            responses = operation.setdefault("responses", {})
            extra: dict[str, str] = {}
            if path.startswith("/api/"):
                extra["401"] = "Authentication required (the server has a token)."
            if method in _WRITES:
                extra["403"] = "Cross-site request refused (send JSON, a Bearer token or X-ABP-CSRF)."
            if "requestBody" in operation:
                extra["400"] = "The body is not JSON."
            if "{job}" in path:
                extra["404"] = "No such job (or unit)."
                if method in _WRITES or path.endswith(("/test", "/changes", "/diff")):  # (diff: not isolated)
                    extra["409"] = ("The job's status does not allow this now (or it has no test run yet, or is "
                                    "not isolated).")
            if operation.get("parameters") or "requestBody" in operation:
                extra["422"] = "A parameter or the body is invalid."
            for status, description in extra.items():
                responses.setdefault(status, _error(description))
            if "422" in responses:  # FastAPI documents its own shape; every error here is an Error
                responses["422"] = _error(responses["422"].get("description") or extra.get("422", "Invalid."))
    schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
