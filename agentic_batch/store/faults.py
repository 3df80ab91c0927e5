"""What a store error means: transient (retry it), which kind of fault, and a one-line message that
never carries SQL or its parameters (item data).

Kept here, next to the engine setup, because only the store module knows its drivers' error shapes:
the executor asks `is_transient` to decide whether to wait out an outage, and every interface (CLI,
REST, MCP) asks `user_error` to turn a store failure into one readable line.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from agentic_batch.errors import StoreError, StoreFault

#: Fault kinds, in the words users see.
UNREACHABLE, LOCKED, DISK_FULL, READ_ONLY = "unreachable", "locked", "disk full", "not writable"

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
_QUOTED_VALUE = re.compile(r'(:\s*)"[^"]*"\s*$')
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_RO_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def _driver_error(exc: BaseException) -> BaseException:
    """SQLAlchemy wraps the driver's exception in `.orig`; look at the driver's own."""
    return getattr(exc, "orig", None) or exc


#: Below this much free space the disk holding a SQLite store counts as full (SQLite often reports a
#: full disk as "disk I/O error" or "unable to open database file": creating its -shm file failed).
_FULL_BELOW_BYTES = 256 * 1024


def sqlite_path(url: object) -> Path | None:
    try:
        import sqlalchemy as sa

        parsed = url if isinstance(url, sa.URL) else sa.make_url(str(url))
    except Exception:
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _disk_full_at(path: Path | None) -> bool:
    """Is the file system that holds `path` (or its nearest existing parent) out of space?"""
    while path is not None and not path.exists() and path.parent != path:
        path = path.parent
    if path is None:
        return False
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW_BYTES


def fault_kind(exc: BaseException, url: object = None) -> str | None:
    """The kind of store fault `exc` is, or None when it is not one (a bug, bad data, a constraint).
    With the store's `url`, a SQLite I/O failure on a full disk is recognised as "disk full"."""
    kind = _raw_kind(exc)
    path = sqlite_path(url) if url is not None and kind in (UNREACHABLE, LOCKED, READ_ONLY) else None
    if path is not None and _disk_full_at(path):
        return DISK_FULL
    if path is not None and kind == UNREACHABLE and not _writable_dir(path.parent):
        return READ_ONLY  # "unable to open database file" on a read-only mount
    return kind


def _writable_dir(path: Path) -> bool:
    """os.access honours read-only mounts even for root (who bypasses permission bits)."""
    return not path.is_dir() or os.access(path, os.W_OK | os.X_OK)


def _raw_kind(exc: BaseException) -> str | None:
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
    import sqlalchemy as sa

    if isinstance(exc, (sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)):
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
    # PostgreSQL quotes the offending value at the end of some messages
    # ('invalid input syntax for type integer: "…"'): that value is item data
    return _QUOTED_VALUE.sub(r'\1"<value hidden>"', lines[0]) if lines else type(exc).__name__


def where(url: object) -> str:
    """A short name for the store's location, for messages (never the password)."""
    path = sqlite_path(url)
    if path is not None:
        return f"the SQLite store {path}"
    try:
        import sqlalchemy as sa

        parsed = url if isinstance(url, sa.URL) else sa.make_url(str(url))
        return f"the PostgreSQL store at {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}"
    except Exception:
        return "the store"


def remedy(kind: str | None, url: object = None) -> str:
    """What the user should do about a fault of this kind."""
    sqlite = url is None or sqlite_path(url) is not None
    if kind == DISK_FULL:
        return ("free space on the disk that holds ABP_HOME, or point ABP_HOME elsewhere" if sqlite
                else "free space on the database server's disk")
    if kind == READ_ONLY:
        return "make it writable, or set ABP_HOME to a writable directory"
    if kind == LOCKED:
        return "another process holds a lock on the SQLite store; let it finish or stop it"
    if sqlite:
        return "check that ABP_HOME (or the path in ABP_DB_URL) exists, is writable and its disk is healthy"
    return "check that the database server is running and reachable (ABP_DB_URL)"


def user_error(exc: BaseException, url: object = None, home: Path | None = None) -> StoreError | None:
    """An `AbpError` for a store fault (one line, no SQL, no parameters), or None if `exc` is not one.

    Non-transient driver errors (a constraint, bad data) still become one sanitized line: whatever
    reaches a user from the store never echoes item data.
    """
    kind = fault_kind(exc, url)
    place = where(url) if url is not None else "the store"
    if isinstance(exc, OSError) and not _is_dbapi(exc):
        if kind is None:
            return None
        target = exc.filename or place
        reason = (exc.strerror or describe(exc)).lower()
        if not _ours(target, url, home):  # some other file (an export, a source): no store advice
            return StoreFault(f"cannot use {target}: {reason}")
        return StoreFault(f"cannot write {target}: {reason}", hint=remedy(kind, url))
    if kind == DISK_FULL:
        return StoreFault(f"disk full: cannot write {place} ({describe(exc)})", hint=remedy(kind, url))
    if kind == READ_ONLY:
        return StoreFault(f"cannot write {place}: {describe(exc)}", hint=remedy(kind, url))
    if kind == LOCKED:
        return StoreFault(f"{place} is locked: {describe(exc)}", hint=remedy(kind, url))
    if kind is not None:
        return StoreFault(f"cannot reach {place}: {describe(exc)}", hint=remedy(kind, url))
    if _is_dbapi(exc) and hasattr(exc, "orig"):
        return StoreError(f"store error: {type(_driver_error(exc)).__name__}: {describe(exc)}")
    return None


def _ours(target: object, url: object, home: Path | None) -> bool:
    """Is `target` ABP_HOME, the SQLite store, or a path inside/above them (a missing parent)?"""
    places = [p for p in (home, sqlite_path(url) if url is not None else None) if p is not None]
    if not places:
        return True
    target_path = Path(str(target))
    return any(target_path == p or p.is_relative_to(target_path) or target_path.is_relative_to(p) for p in places)


def store_error_for(exc: BaseException) -> StoreError | None:
    """`user_error` with the store URL from the environment: for the interfaces' last-resort handlers."""
    try:
        from agentic_batch.config import load_settings

        settings = load_settings()
        url: object = settings.db_url
        home: Path | None = settings.home
    except Exception:
        url, home = None, None
    try:
        return user_error(exc, url, home)
    except Exception:  # the error path itself must never fail
        return None
