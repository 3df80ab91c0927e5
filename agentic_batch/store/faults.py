"""What a store error means: transient (retry it), which kind of fault, and a one-line message that
never carries SQL or its parameters (item data).

Kept here, next to the engine setup, because only the store module knows its drivers' error shapes:
the executor asks `is_transient` to decide whether to wait out an outage, and every interface (CLI,
REST, MCP) asks `user_error` to turn a store failure into one readable line.
"""

from __future__ import annotations

import errno

from agentic_batch.errors import StoreError

#: Fault kinds, in the words users see.
UNREACHABLE, LOCKED, DISK_FULL, READ_ONLY = "unreachable", "locked", "disk full", "read-only"

_SQLITE_MARKERS = (
    ("database or disk is full", DISK_FULL),
    ("disk is full", DISK_FULL),
    ("database is locked", LOCKED),
    ("database table is locked", LOCKED),
    ("database is busy", LOCKED),
    ("disk i/o error", UNREACHABLE),
    ("unable to open database file", UNREACHABLE),
    ("readonly database", READ_ONLY),
    ("read-only file system", READ_ONLY),
)
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_RO_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def _driver_error(exc: BaseException) -> BaseException:
    """SQLAlchemy wraps the driver's exception in `.orig`; look at the driver's own."""
    return getattr(exc, "orig", None) or exc


def fault_kind(exc: BaseException) -> str | None:
    """The kind of store fault `exc` is, or None when it is not one (a bug, bad data, a constraint)."""
    if isinstance(exc, OSError) and not _is_dbapi(exc):
        if exc.errno in _DISK_ERRNOS:
            return DISK_FULL
        if exc.errno in _RO_ERRNOS:
            return READ_ONLY
        return None
    orig = _driver_error(exc)
    module = type(orig).__module__
    if module.startswith("sqlite3"):
        text = str(orig).lower()
        for marker, kind in _SQLITE_MARKERS:
            if marker in text:
                return kind
        return None
    if module.startswith("psycopg"):
        if getattr(orig, "sqlstate", None) == "53100" or "no space left on device" in str(orig).lower():
            return DISK_FULL
        import psycopg

        if isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError)):
            return UNREACHABLE
        return None
    if getattr(exc, "connection_invalidated", False):
        return UNREACHABLE
    try:
        import sqlalchemy as sa
    except ImportError:  # pragma: no cover - SQLAlchemy is a hard dependency
        return None
    if isinstance(exc, (sa.exc.InterfaceError, sa.exc.DisconnectionError)):
        return UNREACHABLE
    return None


def _is_dbapi(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("sqlite3", "psycopg", "sqlalchemy"))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the store may come back (a restart, a lock released, space freed)."""
    return fault_kind(exc) is not None


def describe(exc: BaseException) -> str:
    """The driver's own first line: no "[SQL: …]", no "[parameters: …]", no "(Background on …)" and
    no DETAIL lines (PostgreSQL repeats key values there)."""
    text = str(_driver_error(exc)).strip()
    for cut in ("[SQL:", "[parameters:", "(Background on this error"):
        text = text.split(cut, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def where(url: object, home: object = None) -> str:
    """A short name for the store's location, for messages."""
    try:
        import sqlalchemy as sa

        parsed = sa.make_url(str(url)) if not isinstance(url, sa.URL) else url
        if parsed.get_backend_name() == "sqlite":
            return f"the SQLite store {parsed.database}"
        return f"the PostgreSQL store at {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"
    except Exception:
        return "the store"


def remedy(kind: str | None) -> str:
    """What the user should do about a fault of this kind."""
    if kind == DISK_FULL:
        return "free space on the disk that holds ABP_HOME / the database"
    if kind == READ_ONLY:
        return "make ABP_HOME writable, or point ABP_HOME (or ABP_DB_URL) somewhere writable"
    if kind == LOCKED:
        return "another process holds a lock on the SQLite store; let it finish or stop it"
    return "check that the database is running and reachable (ABP_DB_URL)"


def user_error(exc: BaseException, url: object = None) -> StoreError | None:
    """An `AbpError` for a store fault (one line, no SQL, no parameters), or None if `exc` is not one.

    Non-transient driver errors (a constraint, bad data) still become one sanitized line: whatever
    reaches a user from the store never echoes item data.
    """
    kind = fault_kind(exc)
    place = where(url) if url is not None else "the store"
    if kind == DISK_FULL:
        return StoreError(f"disk full: cannot write {place} ({describe(exc)})", hint=remedy(kind))
    if kind == READ_ONLY:
        name = getattr(exc, "filename", None)
        target = f"{name}" if name else place
        return StoreError(f"cannot write {target}: {describe(exc)}", hint=remedy(kind))
    if kind is not None:
        return StoreError(f"{place} is {'locked' if kind == LOCKED else 'unreachable'}: {describe(exc)}",
                          hint=remedy(kind))
    if _is_dbapi(exc) and hasattr(exc, "orig"):
        return StoreError(f"store error: {type(_driver_error(exc)).__name__}: {describe(exc)}")
    return None
