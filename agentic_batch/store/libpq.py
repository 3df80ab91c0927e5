"""The dozen libpq calls the direct reads make on PostgreSQL, through ctypes: connect, run a query, read text.

`import psycopg` costs ~100-200 ms of CPU here (its connection classes, adapters, error classes,
asyncio and importlib.metadata, all at import time: docs/benchmarks.md, issue 16), against
~4 ms for `sqlite3`, and even `psycopg.pq` alone imports most of it. `abp list` / `status` /
`show` answer in ~0.1 s on SQLite; on PostgreSQL they need three or four plain queries. So the direct
reads (`store.direct`) call the libpq psycopg itself loads — the copy bundled with psycopg-binary, or
the system's, in psycopg's own order — through ctypes (~8 ms), as psycopg's pure-Python
implementation (`psycopg.pq.pq_ctypes`) does. libpq parses the URL, reads PG* variables, ~/.pgpass and
service files, negotiates TLS and authenticates exactly as it does under psycopg; only the result
decoding is here, for the column types the store uses (`LOADERS`, text format, as psycopg loads them).
Any other type, any error, no libpq found: `LibpqError`, and the caller takes the SQLAlchemy path.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

#: `PQresultStatus` values of a result that succeeded; `PQstatus` of a failed connection; `PQconnectPoll`'s.
_COMMAND_OK, _TUPLES_OK, _CONNECTION_BAD = 1, 2, 1
_POLLING_FAILED, _POLLING_READING, _POLLING_WRITING, _POLLING_OK = 0, 1, 2, 3
_NOTICE_PROCESSOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_IGNORE_NOTICE = _NOTICE_PROCESSOR(lambda _arg, _message: None)


def _numeric(text: str) -> Any:
    from decimal import Decimal  # a SUM of bigints; ~5 ms to import, so only when one comes back

    return Decimal(text)


#: Type OID -> how psycopg loads a value of that type in text format (psycopg.types.*: int, float,
#: Decimal, bool, str, json.loads).
LOADERS: dict[int, Callable[[str], Any]] = {
    16: lambda s: s == "t",                       # bool
    20: int, 21: int, 23: int, 26: int,            # int8, int2, int4, oid
    700: float, 701: float,                        # float4, float8
    1700: _numeric,                                # numeric
    25: str, 1043: str, 1042: str, 19: str,        # text, varchar, bpchar, name
    114: json.loads, 3802: json.loads,             # json, jsonb
}


class LibpqError(Exception):
    """libpq could not be loaded, could not connect, or a query failed or returned a type not loaded here."""


def _candidates() -> list[str]:
    """Where libpq is, in the order psycopg picks its implementation: psycopg-c and the pure-Python one link
    the system's libpq, psycopg-binary bundles its own (auditwheel: `psycopg_binary.libs/libpq-HASH.so.5.N`,
    delocate: `psycopg_binary/.dylibs/libpq.5.dylib`)."""
    from importlib.machinery import PathFinder

    system = ["libpq.5.dylib"] if sys.platform == "darwin" else ["libpq.so.5"]
    if PathFinder.find_spec("psycopg_c") is not None:
        return system
    spec = PathFinder.find_spec("psycopg_binary")
    if spec is None or not spec.submodule_search_locations:
        return system
    package = list(spec.submodule_search_locations)[0]
    bundled = []
    for folder in (package + ".libs", os.path.join(package, ".dylibs")):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        bundled += [os.path.join(folder, n) for n in names if n.startswith("libpq") and (".so" in n or ".dylib" in n)]
    return bundled or system


_lib: Any = None


def _load() -> Any:
    global _lib
    if _lib is not None:
        return _lib
    lib = None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError:
            continue
    if lib is None:
        raise LibpqError("no libpq found")
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    for name, restype, argtypes in (
            ("PQconnectStartParams", p, [ctypes.POINTER(s), ctypes.POINTER(s), i]), ("PQconnectPoll", i, [p]),
            ("PQsetNoticeProcessor", p, [p, _NOTICE_PROCESSOR, p]), ("PQstatus", i, [p]), ("PQsocket", i, [p]),
            ("PQerrorMessage", s, [p]), ("PQfinish", None, [p]), ("PQparameterStatus", s, [p, s]),
            ("PQexecParams", p, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
            ("PQresultStatus", i, [p]), ("PQresultErrorMessage", s, [p]), ("PQclear", None, [p]),
            ("PQntuples", i, [p]), ("PQnfields", i, [p]), ("PQfname", s, [p, i]),
            ("PQftype", ctypes.c_uint, [p, i]), ("PQgetisnull", i, [p, i, i]), ("PQgetvalue", s, [p, i, i])):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    _lib = lib
    return lib


class Cursor:
    """What `sqlite3`'s cursor offers the direct reads: the column names and the rows of one query."""

    def __init__(self, names: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.description = [(name,) for name in names]
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class Connection:
    """One libpq connection. `params` are libpq keywords (`dbname` may be a whole URL: expanded, and the
    keywords after it override what it sets), in order."""

    def __init__(self, params: Sequence[tuple[str, str]], timeout: float) -> None:
        """Connect, giving up after `timeout` seconds (0: never), as libpq's `connect_timeout` would."""
        lib = self._lib = _load()
        self._conn: int | None = None
        keys = (ctypes.c_char_p * (len(params) + 1))(*[k.encode() for k, _ in params], None)
        values = (ctypes.c_char_p * (len(params) + 1))(*[v.encode() for _, v in params], None)
        self._conn = lib.PQconnectStartParams(keys, values, 1)  # expand_dbname
        if not self._conn:
            raise LibpqError("libpq could not allocate a connection")
        # before anything arrives: libpq prints a server's notices and warnings (a startup warning such
        # as a collation version mismatch, too) on stderr; psycopg hands them to `logging`, silent here
        lib.PQsetNoticeProcessor(self._conn, _IGNORE_NOTICE, None)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        state = _POLLING_WRITING if lib.PQstatus(self._conn) != _CONNECTION_BAD else _POLLING_FAILED
        while state not in (_POLLING_OK, _POLLING_FAILED):
            sock = lib.PQsocket(self._conn)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            reading, writing = ([sock], []) if state == _POLLING_READING else ([], [sock])
            if sock < 0 or not any(select.select(reading, writing, [], left)):
                self.close()
                raise LibpqError(f"timeout expired ({timeout:g} s) connecting to the store")
            state = lib.PQconnectPoll(self._conn)
        if state == _POLLING_FAILED:
            message = (lib.PQerrorMessage(self._conn) or b"").decode("utf-8", "replace").strip()
            self.close()
            raise LibpqError(message)
        if lib.PQparameterStatus(self._conn, b"client_encoding") != b"UTF8":
            self.close()  # the URL asked for another encoding: psycopg would decode with it; not done here
            raise LibpqError("client_encoding is not UTF8")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run `sql` ($1, $2, ... placeholders; each parameter sent as text, its type inferred by the
        server as for a literal) and read every row."""
        lib, conn = self._lib, self._conn
        if conn is None:
            raise LibpqError("the connection is closed")
        values = (ctypes.c_char_p * max(1, len(params)))(
            *[None if v is None else str(v).encode() for v in params])
        result = lib.PQexecParams(conn, sql.encode(), len(params), None, values, None, None, 0)
        if not result:
            raise LibpqError((lib.PQerrorMessage(conn) or b"").decode("utf-8", "replace").strip())
        try:
            if lib.PQresultStatus(result) not in (_COMMAND_OK, _TUPLES_OK):
                raise LibpqError((lib.PQresultErrorMessage(result) or b"").decode("utf-8", "replace").strip())
            width, height = lib.PQnfields(result), lib.PQntuples(result)
            names = [lib.PQfname(result, c).decode() for c in range(width)]
            loaders = []
            for c in range(width):
                oid = lib.PQftype(result, c)
                if oid not in LOADERS:
                    raise LibpqError(f"column {names[c]!r} has type OID {oid}, which is not loaded here")
                loaders.append(LOADERS[oid])
            isnull, getvalue = lib.PQgetisnull, lib.PQgetvalue
            rows = [tuple(load(value.decode()) if (value := getvalue(result, r, c)) or not isnull(result, r, c)
                          else None for c, load in enumerate(loaders)) for r in range(height)]  # NULL reads as b""
        finally:
            lib.PQclear(result)
        return Cursor(names, rows)

    def socket(self) -> int:
        """The connection's socket (its file descriptor; -1 when closed)."""
        return -1 if self._conn is None else int(self._lib.PQsocket(self._conn))

    def close(self) -> None:
        if self._conn is not None:
            self._lib.PQfinish(self._conn)
            self._conn = None
