"""A `sql` source: one item per row of a query, on SQLite or PostgreSQL.

The connection is read-only at the database level, not by inspecting the query: SQLite opens the
file with `mode=ro` (and a missing file is an error, not a new empty database), PostgreSQL starts
every transaction with `default_transaction_read_only=on`. `mode=ro` does not cover files a query
names itself: `ATTACH 'x.db'` (or `'file:x.db?mode=rwc'`) and `VACUUM INTO 'x.db'` would create them,
so SQLite connections also get an authorizer that refuses ATTACH, DETACH and PRAGMA assignments
while the statement is prepared, before anything runs. Rows are streamed (a server-side cursor on
PostgreSQL) in batches of 1000. The query goes to the driver as written (`exec_driver_sql` with no
parameters), so `%` and `:name` in it are plain SQL, not placeholders.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, create_engine, event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.errors import SourceError
from agentic_batch.flags import SOURCE_PANEL, Flag
from agentic_batch.sources.kind import RawItem, SourceKind, absolute
from agentic_batch.sources.reading import to_jsonable

#: Rows fetched per round trip.
YIELD_PER = 1000
#: First words of statements that read; anything else failing gets the "only reads" hint.
_PG_READ_ONLY = "-c default_transaction_read_only=on"
_READING_WORDS = frozenset({"select", "with", "values", "table", "show", "explain", "pragma"})
#: PRAGMAs that take an argument and only read (`PRAGMA table_info(t)`); any other with one is a write.
_READING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_info", "index_xinfo", "index_list",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
})


class SqlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Flag(SOURCE_PANEL, name="--sql", help="SQL query whose rows are the items (read-only "
                                                                "connection).")] = Field(
        description="SQL query whose rows are the items (run over a read-only connection)")
    db_url: Annotated[str, Flag(SOURCE_PANEL, name="--sql-db", help="Database URL for --sql: sqlite:///file.db, "
                                                                    "postgresql+psycopg://...")] = Field(
        description="database URL: sqlite:////abs/path.db or postgresql+psycopg://user@host/db")


def iter_sql(options: SqlOptions, cwd: Path | None = None) -> Iterator[RawItem]:
    """Yield `{column: JSON-able value}` per row of `options.query`."""
    db_url, query = options.db_url, options.query
    label = hide_password(db_url)
    engine = _read_only_engine(db_url, label)
    try:
        conn = _connect(engine, label)
        with conn:
            try:
                result = conn.execution_options(
                    stream_results=True, yield_per=YIELD_PER, no_parameters=True
                ).exec_driver_sql(query)
                if not result.returns_rows:
                    raise SourceError(
                        f"the sql query on {label} returns no rows", hint="a sql source needs a SELECT"
                    )
                columns = list(result.keys())
                _check_columns(columns)
                for number, row in enumerate(result, 1):
                    yield (
                        f"row {number} of the query",
                        {column: to_jsonable(value) for column, value in zip(columns, row, strict=True)},
                    )
            except SQLAlchemyError as exc:
                raise _query_error(exc, query, label, _refusal(conn)) from None
    finally:
        engine.dispose()


def _connect(engine: Engine, label: str) -> Connection:
    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise SourceError(
            f"cannot connect to {label}: {_first_line(exc)}",
            hint="check the database URL (host, port, database, user) and that the server is up",
        ) from None


def _check_columns(columns: list[str]) -> None:
    """Two result columns with one name would silently collapse into one payload field."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise SourceError(
                f"the sql query returns two columns named {column!r}",
                hint="give them distinct names with AS, e.g. SELECT a.id AS a_id, b.id AS b_id",
            )
        seen.add(column)


def _read_only_engine(db_url: str, label: str) -> Engine:
    """An engine that cannot write: SQLite `mode=ro` URI, PostgreSQL read-only transactions."""
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise SourceError(
            f"invalid database URL {label!r}",
            hint="use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname",
        ) from None
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        url = _sqlite_read_only_url(url, label)
    elif backend in ("postgresql", "postgres"):
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3 is the project's driver
        options = " ".join(filter(None, [str(url.query.get("options", "")), _PG_READ_ONLY]))
        url = url.difference_update_query(["options"])  # merged here, else connect_args would replace it
        connect_args["options"] = options
    else:
        raise SourceError(
            f"unsupported database {backend!r} in {label}",
            hint="a sql source reads SQLite (sqlite:///file.db) or PostgreSQL (postgresql+psycopg://...)",
        )
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except ImportError as exc:
        raise SourceError(
            f"the database driver for {label} is not installed ({exc})",
            hint="pip install 'agentic-batch[postgres]'",
        ) from None
    except (ArgumentError, SQLAlchemyError) as exc:
        raise SourceError(f"invalid database URL {label!r}: {_first_line(exc)}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _forbid_sqlite_side_effects)
    return engine


class _Refused:
    """What the authorizer last refused on a connection, to name it instead of 'not authorized'."""

    def __init__(self) -> None:
        self.what: str | None = None


def _refusal(conn: Connection) -> _Refused | None:
    try:
        return conn.connection.info.get("abp_refused")
    except SQLAlchemyError:
        return None


def _forbid_sqlite_side_effects(dbapi_connection: sqlite3.Connection, record: Any) -> None:
    """Refuse, at prepare time, statements that reach beyond the read-only main file.

    ATTACH (and VACUUM INTO, which SQLite authorizes as an ATTACH) would create the file it names;
    DETACH and PRAGMA assignments change the connection. No database may be attached at all.
    """
    refused = record.info["abp_refused"] = _Refused()
    dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action == sqlite3.SQLITE_ATTACH:
            refused.what = f"opening another database file ({arg1!r}, by ATTACH or VACUUM INTO)"
        elif action == sqlite3.SQLITE_DETACH:
            refused.what = "DETACH"
        elif action == sqlite3.SQLITE_PRAGMA and arg2 is not None and (arg1 or "").lower() not in _READING_PRAGMAS:
            refused.what = f"PRAGMA {arg1} = {arg2}"
        else:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    dbapi_connection.set_authorizer(authorize)


def _sqlite_read_only_url(url: URL, label: str) -> URL:
    """`sqlite:///x.db` -> `sqlite+pysqlite:///file:/abs/x.db?mode=ro&uri=true`."""
    database = url.database or ""
    database = database.removeprefix("file:")
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise SourceError(
            "an in-memory SQLite database has no rows to read",
            hint="give the database file: sqlite:///path/to/file.db",
        )
    path = os.path.abspath(database)
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise SourceError(
            f"sqlite database {path} {what}",
            hint="check the database URL; sqlite:///relative.db resolves against the working directory",
        )
    return URL.create(
        "sqlite+pysqlite",
        database="file:" + quote(path, safe="/"),
        query={"mode": "ro", "uri": "true"},
    )


def _first_line(exc: BaseException) -> str:
    """The driver's own words without SQLAlchemy's '[SQL: ...]' and background-link trailer."""
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def _query_error(exc: SQLAlchemyError, query: str, label: str, refused: _Refused | None = None) -> SourceError:
    if refused is not None and refused.what:
        return SourceError(
            f"sql query refused on {label}: {refused.what} is not allowed",
            hint="a sql source only reads the database it is given; it cannot attach, create or change files",
        )
    words = re.findall(r"[A-Za-z]+", re.sub(r"--[^\n]*|/\*.*?\*/", " ", query, flags=re.DOTALL))
    first_word = words[0].lower() if words else ""
    if first_word and first_word not in _READING_WORDS:
        hint = f"a sql source only reads (the connection is read-only); {first_word.upper()} cannot run"
    else:
        hint = "check the query's tables, columns and syntax with your SQL client"
    return SourceError(f"sql query failed on {label}: {_first_line(exc)}", hint=hint)


def _absolute_sqlite_url(db_url: str, base: str) -> str:
    """Make the file of a `sqlite:///relative.db` URL absolute; other URLs are returned unchanged.

    Parsed with SQLAlchemy's own URL parser (the one that will open it), so `file:` prefixes, query
    strings and percent-escapes are read the same way here and there. A `file:` URI prefix is
    dropped: the sql source opens every SQLite file as its own read-only URI anyway.
    """
    from sqlalchemy.engine import make_url  # lazily: a csv job never imports SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError):
        return db_url  # the sql source reports an invalid URL in its own words
    database = (url.database or "").removeprefix("file:")
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return db_url
    return url.set(database=absolute(database, base)).render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    """The URL as it may be shown in messages and listings (password replaced by ***)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        if "@" not in (parsed.host or ""):  # an unescaped '@' in a password ends up in the host
            return parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        pass
    # Not parseable (a bad port, say): mask everything between '://user:' and the last '@' anyway.
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at):
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def _describe(options: SqlOptions) -> str:
    query = " ".join(options.query.split())
    query = query if len(query) <= 60 else query[:57] + "..."
    return f"sql {query!r} on {hide_password(options.db_url)}"


KIND = SourceKind(
    name="sql", items="one item per row of the query", options_model=SqlOptions, iterate=iter_sql,
    resolve=lambda o, cwd: o.model_copy(update={"db_url": _absolute_sqlite_url(o.db_url, str(cwd))}),
    describe=_describe,
)
