"""Errors a user can act on.

Every interface turns an `AbpError` into one readable line (CLI), a JSON error with a status code
(REST) or an MCP tool error. Anything else escaping the service layer is a bug.
"""

from __future__ import annotations


class AbpError(Exception):
    """A problem the user can fix; `hint` says how."""

    #: HTTP status the REST layer maps this error to.
    http_status = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

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
