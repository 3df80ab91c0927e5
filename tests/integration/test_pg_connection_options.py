"""Every abp PostgreSQL connection finds a vanished peer: the pool's and the LISTEN thread's carry the
same keepalives and timeouts, on the client's socket and (as GUCs) on the server's side.

Asked of a real server: `SHOW` answers with the setting the session runs under, and psycopg reports
the libpq options the connection was opened with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from agentic_batch.store.notify import Listener
from tests.fixtures.stores import pg_available, pg_schema_url

SERVER_SIDE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
               "tcp_user_timeout": "15000"}
CLIENT_SIDE = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3",
               "tcp_user_timeout": "15000", "connect_timeout": "10"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    ok, why = pg_available()
    if not ok:
        pytest.skip(why)
    yield from pg_schema_url()


def test_the_listen_connection_has_the_pools_keepalives(pg_url: str) -> None:
    listener = Listener(sa.make_url(pg_url), lambda job, what: None)
    with listener.connect() as conn:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SIDE}  # type: ignore[index]
        params = conn.info.get_parameters()
        search_path = conn.execute("SHOW search_path").fetchone()[0]  # type: ignore[index]
    assert shown == SERVER_SIDE
    assert {key: params.get(key) for key in CLIENT_SIDE} == CLIENT_SIDE
    assert search_path.startswith("abp_test_")  # the URL's own options are kept beside the GUCs


def test_the_pool_connection_has_the_same_options(pg_url: str) -> None:
    from agentic_batch.store.db import make_engine

    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            shown = {name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in SERVER_SIDE}
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert shown == SERVER_SIDE
    assert {key: params.get(key) for key in CLIENT_SIDE} == CLIENT_SIDE


def test_what_the_url_sets_wins(pg_url: str) -> None:
    url = sa.make_url(pg_url).update_query_dict({"keepalives_idle": "30", "connect_timeout": "3"})
    listener = Listener(url, lambda job, what: None)
    with listener.connect() as conn:
        params = conn.info.get_parameters()
    assert params.get("keepalives_idle") == "30"
    assert params.get("connect_timeout") == "3"
    assert params.get("keepalives_interval") == "2"


def test_the_direct_reads_connection_has_them_too(pg_url: str) -> None:
    """`abp list` / `status` / `show` read on libpq without psycopg (`store.direct`): the server runs their
    session under the same GUCs, and their socket probes a silent peer as the pool's does."""
    import socket

    from agentic_batch.store import Store, open_store
    from agentic_batch.store.direct import open_direct

    store: Store = open_store(pg_url)  # migrated: the direct reads open only a store at this revision
    store.close()
    reads = open_direct(pg_url)
    try:
        shown = {name: reads.conn.execute(f"SHOW {name}").fetchall()[0][0] for name in SERVER_SIDE}
        search_path = reads.conn.execute("SHOW search_path").fetchall()[0][0]
        sock = socket.socket(fileno=os.dup(reads.conn.socket()))
        try:
            client = {"keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                      "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                      "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                      "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                      "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)}
        finally:
            sock.close()
    finally:
        reads.close()
    assert shown == SERVER_SIDE
    assert search_path.startswith("abp_test_")
    assert {key: str(value) for key, value in client.items()} == {k: v for k, v in CLIENT_SIDE.items()
                                                                  if k != "connect_timeout"}
