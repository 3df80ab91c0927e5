"""SQL sources: SQLite always, PostgreSQL when ABP_TEST_POSTGRES_URL is set.

Both backends must refuse writes: the connection is read-only at the database level.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import SourceError
from agentic_batch.sources import Item, iter_items
from agentic_batch.sources import resolve_spec
from agentic_batch.sources.reading import to_jsonable
from agentic_batch.sources.sql import hide_password
from agentic_batch.spec import SourceSpec


def rows(cwd: Path, db_url: str, query: str, **extra: Any) -> list[Item]:
    spec = SourceSpec(kind="sql", db_url=db_url, query=query, **extra)
    return list(iter_items(spec, cwd=cwd))


def sql_error(cwd: Path, db_url: str, query: str) -> str:
    with pytest.raises(SourceError) as info:
        rows(cwd, db_url, query)
    return info.value.one_line()


# -------------------------------------------------------------------------------------------- sqlite


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, blob BLOB, note TEXT)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            [(n, f"name {n}", n / 2, bytes([n % 256, 255]), None) for n in range(1, 5001)],
        )
    conn.close()
    return path


def test_sqlite_rows_become_items(tmp_path: Path, sqlite_db: Path) -> None:
    found = rows(tmp_path, "sqlite:///data.db", "SELECT * FROM t WHERE id <= 2 ORDER BY id", key="id")
    assert [i.key for i in found] == ["1", "2"]
    assert found[0].payload == {
        "id": 1,
        "name": "name 1",
        "score": 0.5,
        "blob": base64.b64encode(bytes([1, 255])).decode(),
        "note": None,
    }


def test_sqlite_query_text_goes_to_the_driver_verbatim(tmp_path: Path, sqlite_db: Path) -> None:
    query = "SELECT name, '50%' AS pct, ':not_a_param' AS colon FROM t WHERE name LIKE 'name 1%' AND id = 1"
    assert [i.payload for i in rows(tmp_path, f"sqlite:///{sqlite_db}", query)] == [
        {"name": "name 1", "pct": "50%", "colon": ":not_a_param"}
    ]


def test_sqlite_streams_and_takes_the_first_row(tmp_path: Path, sqlite_db: Path) -> None:
    stream = iter_items(
        SourceSpec(kind="sql", db_url="sqlite:///data.db", query="SELECT id FROM t ORDER BY id"), cwd=tmp_path
    )
    assert next(stream).payload == {"id": 1}
    stream.close()


def test_sqlite_is_read_only(tmp_path: Path, sqlite_db: Path) -> None:
    message = sql_error(tmp_path, "sqlite:///data.db", "INSERT INTO t (id, name) VALUES (99999, 'x')")
    assert "readonly" in message and "INSERT cannot run" in message
    with sqlite3.connect(sqlite_db) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE id = 99999").fetchone() == (0,)
    conn.close()


def test_sqlite_missing_file_is_refused_and_not_created(tmp_path: Path) -> None:
    message = sql_error(tmp_path, "sqlite:///missing.db", "SELECT 1")
    assert f"sqlite database {tmp_path / 'missing.db'} does not exist" in message
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("query", "needle", "created"),
    [
        ("ATTACH DATABASE 'x.db' AS x", "opening another database file ('x.db'", "x.db"),
        ("ATTACH DATABASE 'file:y.db?mode=rwc' AS y", "'file:y.db?mode=rwc'", "y.db"),
        ("VACUUM INTO 'copy.db'", "by ATTACH or VACUUM INTO", "copy.db"),
        ("DETACH DATABASE x", "DETACH is not allowed", None),
        ("PRAGMA user_version = 7", "PRAGMA user_version = 7 is not allowed", None),
    ],
)
def test_sqlite_refuses_statements_that_reach_past_the_file(
    tmp_path: Path, sqlite_db: Path, monkeypatch: pytest.MonkeyPatch, query: str, needle: str, created: str | None
) -> None:
    """`mode=ro` covers the main file only: ATTACH / VACUUM INTO would create the file they name."""
    monkeypatch.chdir(tmp_path)  # SQLite resolves ATTACH paths against the process's cwd
    message = sql_error(tmp_path, "sqlite:///data.db", query)
    assert needle in message and "sql query refused" in message, message
    if created:
        assert not (tmp_path / created).exists()
    with sqlite3.connect(sqlite_db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
    conn.close()


def test_sqlite_reading_pragmas_and_table_functions_still_work(tmp_path: Path, sqlite_db: Path) -> None:
    assert [i.payload["name"] for i in rows(tmp_path, "sqlite:///data.db", "PRAGMA table_info(t)")][:2] == [
        "id", "name"
    ]
    assert rows(tmp_path, "sqlite:///data.db", "SELECT * FROM pragma_user_version")[0].payload == {"user_version": 0}
    assert len(rows(tmp_path, "sqlite:///data.db", "SELECT value FROM json_each('[1, 2, 3]')")) == 3


def test_sqlite_file_uri_with_mode_rwc_does_not_create_the_file(tmp_path: Path) -> None:
    message = sql_error(tmp_path, "sqlite:///file:new.db?mode=rwc", "SELECT 1")
    assert "does not exist" in message
    assert not (tmp_path / "new.db").exists() and not (tmp_path / "file:new.db").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://me:s3cret@db.example:5432/app", "postgresql+psycopg://me:***@db.example:5432/app"),
        ("postgresql://me:p%40ss@h/app", "postgresql://me:***@h/app"),
        ("postgresql://me:pw@host:notaport/app", "postgresql://me:***@host:notaport/app"),
        ("postgresql://me:a@b@host/app", "postgresql://me:***@host/app"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("not a url", "not a url"),
    ],
)
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def test_relative_sqlite_urls_become_absolute(tmp_path: Path) -> None:
    for url in ("sqlite:///d.db", "sqlite:///file:d.db", "sqlite+pysqlite:///sub/../d.db"):
        resolved = resolve_spec(SourceSpec(kind="sql", db_url=url, query="SELECT 1"), tmp_path)
        assert resolved.db_url is not None and resolved.db_url.endswith(f"//{tmp_path}/d.db"), resolved.db_url
        assert resolve_spec(resolved, tmp_path).db_url == resolved.db_url  # idempotent
    for url in ("sqlite:////abs/d.db", "sqlite://", "postgresql://u@h/db"):
        assert resolve_spec(SourceSpec(kind="sql", db_url=url, query="SELECT 1"), tmp_path).db_url == url


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("SELEC id FROM t", 'near "SELEC": syntax error'),
        ("SELECT * FROM nope", "no such table: nope"),
        ("SELECT id, id FROM t", "two columns named 'id'"),
    ],
)
def test_sqlite_query_errors_are_one_line(tmp_path: Path, sqlite_db: Path, query: str, needle: str) -> None:
    message = sql_error(tmp_path, "sqlite:///data.db", query)
    assert needle in message
    assert "\n" not in message and "[SQL:" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory"),
        ("not a url", "invalid database URL"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/db", "cannot connect to"),
    ],
)
def test_bad_database_urls(tmp_path: Path, url: str, needle: str) -> None:
    assert needle in sql_error(tmp_path, url, "SELECT 1")


def test_values_become_json_able() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    ident = uuid.uuid4()
    assert to_jsonable(
        {
            "int_decimal": decimal.Decimal("12.000"),
            "float_decimal": decimal.Decimal("1.25"),
            "precise": decimal.Decimal("12345678901234567890.123456789"),
            "nan": decimal.Decimal("NaN"),
            "inf": float("inf"),
            "when": when,
            "day": when.date(),
            "uuid": ident,
            "bytes": memoryview(b"\x00\x01"),
            "list": (1, [dt.time(1, 2)]),
            "span": dt.timedelta(hours=2),
        }
    ) == {
        "int_decimal": 12,
        "float_decimal": 1.25,
        "precise": "12345678901234567890.123456789",
        "nan": "NaN",
        "inf": "inf",
        "when": "2024-05-06T07:08:09+00:00",
        "day": "2024-05-06",
        "uuid": str(ident),
        "bytes": "AAE=",
        "list": [1, ["01:02:00"]],
        "span": "2:00:00",
    }
    with pytest.raises(TypeError):
        to_jsonable({"x": object()}, strict=True)


# ---------------------------------------------------------------------------------------- postgresql


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A unique schema with a table and a writing function; dropped afterwards."""
    url = os.environ.get("ABP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set ABP_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    schema = f"abp_src_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.t (id int PRIMARY KEY, price numeric(10,2), at timestamptz, "
            "ident uuid, raw bytea, doc jsonb, tags text[])"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {schema}.t VALUES (1, 9.50, '2024-01-02T03:04:05Z', "
            "'00000000-0000-0000-0000-000000000001', '\\x0102', '{\"k\": [1, 2]}', ARRAY['a','b']), "
            "(2, 3.00, NULL, NULL, NULL, NULL, NULL)"
        )
        conn.exec_driver_sql(
            f"CREATE FUNCTION {schema}.sneaky() RETURNS int LANGUAGE sql AS "
            f"$$ INSERT INTO {schema}.t (id) VALUES (99) RETURNING id $$"
        )
    try:
        yield url, schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.mark.postgres
def test_postgres_rows_become_items(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    found = rows(tmp_path, url, f"SELECT * FROM {schema}.t ORDER BY id", key="id")
    assert [i.key for i in found] == ["1", "2"]
    assert found[0].payload == {
        "id": 1,
        "price": 9.5,
        "at": "2024-01-02T03:04:05+00:00",
        "ident": "00000000-0000-0000-0000-000000000001",
        "raw": "AQI=",
        "doc": {"k": [1, 2]},
        "tags": ["a", "b"],
    }
    assert found[1].payload["price"] == 3


@pytest.mark.postgres
def test_postgres_is_read_only(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    with pytest.raises(SourceError) as info:
        rows(tmp_path, url, f"INSERT INTO {schema}.t (id) VALUES (98)")
    assert "INSERT cannot run" in info.value.one_line()
    with pytest.raises(SourceError) as info:
        rows(tmp_path, url, f"SELECT {schema}.sneaky()")
    assert "read-only transaction" in info.value.message
    assert [i.payload for i in rows(tmp_path, url, f"SELECT count(*) AS n FROM {schema}.t")] == [{"n": 2}]


@pytest.mark.postgres
def test_postgres_errors_are_one_line(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    message = sql_error(tmp_path, url, f"SELECT * FROM {schema}.missing")
    assert "does not exist" in message and "\n" not in message and "[SQL:" not in message
