"""Errors a user can act on.

Every interface turns an `AbpError` into one readable line (CLI), a JSON error with a status code
(REST) or an MCP tool error. Anything else escaping the service layer is a bug.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD_REF = re.compile(r"«([A-Za-z0-9_.]+)»")


def field_ref(path: str) -> str:
    """Name a job spec field (`timeout_s`, `source.path`, `worker_options.model`) inside a message.

    Each interface says it in its caller's vocabulary: the CLI as its flag (`--timeout`, `--csv`),
    REST and MCP as the field path they were given. Unrendered, a reference reads as the path."""
    return f"«{path}»" if _FIELD_REF.fullmatch(f"«{path}»") else path


def name_fields(text: str, namer: Callable[[str], str] | None = None) -> str:
    """`text` with every field reference said by `namer` (default: the dotted field path)."""
    return _FIELD_REF.sub(lambda m: namer(m.group(1)) if namer else m.group(1), text)


class AbpError(Exception):
    """A problem the user can fix; `hint` says how. Field references (`field_ref()`) in either read as
    field paths (`message`, `hint`, REST and MCP); the CLI renders them as flags (`in_words`)."""

    #: HTTP status the REST layer maps this error to.
    http_status = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(name_fields(message))
        self.raw_message, self.raw_hint = message, hint
        self.message = name_fields(message)
        self.hint = name_fields(hint) if hint else hint

    def in_words(self, namer: Callable[[str], str]) -> tuple[str, str | None]:
        """(message, hint) with field references named by `namer`."""
        return name_fields(self.raw_message, namer), name_fields(self.raw_hint, namer) if self.raw_hint else None

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidSpec(AbpError):
    """The job spec, source, template or an option is wrong."""

    http_status = 422


class SourceError(InvalidSpec):
    """A source cannot be read: missing file, malformed row, SQL error, unknown module."""


class PromptError(InvalidSpec):
    """A prompt template does not compile or references a field the items lack."""


class NotFound(AbpError):
    """An unknown job or unit id."""

    http_status = 404


class IllegalState(AbpError):
    """The job's state does not allow this action (e.g. approve a running job)."""

    http_status = 409


class StoreError(AbpError):
    """The store cannot be opened or migrated, or a store call failed (said without SQL or data)."""

    http_status = 500


class StoreFault(StoreError):
    """The store is unavailable for now: unreachable, locked, read-only or out of disk space."""

    http_status = 503
