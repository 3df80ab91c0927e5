"""The direct reads' libpq client (`store.libpq`, ctypes, no psycopg) reads what psycopg reads.

Asked of a real server: one row of every type the store's columns and aggregates have, NULLs,
non-ASCII text and parameters included, comes back equal, and of the same Python types, through
both; a type not loaded here and a failing query raise `LibpqError` (the caller then takes the
SQLAlchemy path).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentic_batch.store import libpq
from tests.fixtures.stores import pg_available

ROW = ("SELECT 1::int2 AS a, 2::int4 AS b, 9007199254740993::int8 AS c, 0.1::float8 AS d, 1e300::float8 AS e, "
       "'NaN'::float8 AS f, 0.25::float4 AS g, 12.50::numeric AS h, sum(x) AS i, 'é ✓ 字'::text AS j, "
       "'v'::varchar AS k, true AS l, false AS m, NULL::text AS n, NULL::int4 AS o, "
       "'{\"a\": [1, 2.5, null, \"é\"]}'::json AS p, '[true]'::jsonb AS q, count(*) AS r, $1::text AS s, "
       "$2::int4 + 1 AS t, $3::text IS NULL AS u FROM (VALUES (9223372036854775807::int8), (1::int8)) AS v(x)")
PARAMS = ("ünï 'quoted' ?", 41, None)


@pytest.fixture
def conninfo() -> Iterator[str]:
    ok, why = pg_available()
    if not ok:
        pytest.skip(why)
    import os

    yield "postgresql://" + os.environ["ABP_TEST_POSTGRES_URL"].split("://", 1)[1]


def _through_psycopg(conninfo: str, sql: str, params: tuple[Any, ...]) -> tuple[list[str], list[tuple[Any, ...]]]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        cur = conn.execute(sql.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s"), params)
        return [d[0] for d in cur.description or []], cur.fetchall()


def test_every_store_type_reads_as_psycopg_reads_it(conninfo: str) -> None:
    conn = libpq.Connection([("dbname", conninfo)], timeout=10)
    try:
        cur = conn.execute(ROW, PARAMS)
    finally:
        conn.close()
    names, rows = _through_psycopg(conninfo, ROW, PARAMS)
    assert [d[0] for d in cur.description] == names
    ours, theirs = cur.fetchall()[0], rows[0]
    assert [type(v) for v in ours] == [type(v) for v in theirs]
    assert [repr(v) for v in ours] == [repr(v) for v in theirs]  # repr: NaN equals NaN, 12.50 keeps its scale


def test_what_is_not_read_here_raises(conninfo: str) -> None:
    conn = libpq.Connection([("dbname", conninfo)], timeout=10)
    try:
        with pytest.raises(libpq.LibpqError, match="type OID"):
            conn.execute("SELECT now() AS t")
        with pytest.raises(libpq.LibpqError, match="no_such_table"):
            conn.execute("SELECT * FROM no_such_table")
    finally:
        conn.close()
    with pytest.raises(libpq.LibpqError):
        libpq.Connection([("dbname", conninfo), ("dbname", "no_such_database_here")], timeout=10)


def test_the_servers_notices_print_nothing(conninfo: str, capfd: pytest.CaptureFixture[str]) -> None:
    """libpq prints notices and warnings on stderr unless told otherwise; psycopg logs them: a direct
    `abp status` must print what the full one prints, so they go nowhere here either."""
    conn = libpq.Connection([("dbname", conninfo)], timeout=10)
    try:
        conn.execute("DO $$ BEGIN RAISE WARNING 'from the server'; RAISE NOTICE 'and a notice'; END $$")
    finally:
        conn.close()
    assert capfd.readouterr().err == ""


def test_a_server_that_never_answers_times_out() -> None:
    import socket
    import time

    with socket.socket() as silent:  # accepts the TCP connection (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(libpq.LibpqError, match="timeout"):
            libpq.Connection([("host", "127.0.0.1"), ("port", str(silent.getsockname()[1]))], timeout=0.5)
        assert time.monotonic() - started < 5
