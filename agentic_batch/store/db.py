"""Opening the store: one engine per URL, SQLite tuned for many writers, migrations on first use.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE so two writers queue on the lock up front instead of
deadlocking on a read-to-write upgrade. Reads use a plain deferred BEGIN. PostgreSQL needs none of
this; the same SQLAlchemy statements run on both.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from agentic_batch.errors import StoreError
from agentic_batch.store.pg_connect import connect_args
from agentic_batch.store.faults import is_transient, user_error, where

from agentic_batch.store.revision import MIGRATIONS as _MIGRATIONS
from agentic_batch.store.revision import SCHEMA_REVISION, known_revisions

_WRITE_OPTION = "abp_write"


def _sqlite_file(url: sa.URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def make_engine(url: str) -> Engine:
    """Create an engine for `url`, with SQLite's WAL/busy-timeout/BEGIN IMMEDIATE set up."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"ABP_DB_URL {url!r} is not a database URL",
                         hint="use sqlite:///path/to/batch.db or postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise (user_error(exc, parsed) or exc) from None
        busy = _busy_seconds()
        engine = sa.create_engine(parsed, connect_args={"timeout": busy, "check_same_thread": False},
                                  hide_parameters=True)
        _tune_sqlite(engine, busy)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            # pool_pre_ping: after a server restart a pooled connection is tested and replaced on checkout
            # (and a disconnect error invalidates the whole pool), so the executor recovers on its own.
            # pg_connect_args: a connect timeout and keepalives, so an unreachable or vanished server is
            # found out in seconds
            return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True,
                                    connect_args=pg_connect_args(parsed))
        except ModuleNotFoundError as exc:
            raise StoreError(f"the PostgreSQL store needs {exc.name}",
                             hint="pip install 'agentic-batch[postgres]'") from None
    raise StoreError(f"unsupported store database {parsed.get_backend_name()!r}",
                     hint="use sqlite:///... or postgresql+psycopg://...")


def pg_connect_args(url: sa.URL) -> dict[str, str]:
    """The libpq options every abp PostgreSQL connection carries (the pool's, the LISTEN thread's, the
    direct reads'): a connect timeout and the dead-peer keepalives (`pg_connect`); the URL's own win."""
    return connect_args(url.query)


def _busy_seconds() -> float:
    """How long a SQLite call waits for another process's lock before it fails ("database is locked");
    the executor then waits out the lock as a store outage. ABP_SQLITE_BUSY_SECONDS, default 60."""
    from agentic_batch.config import float_env

    return max(0.0, float_env("ABP_SQLITE_BUSY_SECONDS", 60.0))


def _tune_sqlite(engine: Engine, busy: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class CarefulRetry(BaseException):
    """A write in an optimistic batch (`Database.optimistic`) failed for a reason of its rows: the
    batch's transaction is rolled back whole and written again with savepoints. A BaseException, so
    that the handlers inside the batch that would split a refused batch (they catch Exception) let
    it through: without a savepoint, what they would retry is no longer in a known state."""


class Database:
    """One store database: its engine, read and write transactions, and migrations. The query
    classes (`JobQueries`, `UnitQueries`, ...) each hold this object; see `agentic_batch.store.Store`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        self.dialect = self.engine.dialect.name
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._local = threading.local()  # the write transaction open on this thread, if any

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self, savepoint: bool = True) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success.

        Nested on one thread, the inner `write()` joins the outer transaction, so several store calls
        can be made atomic together (`Store.write_batch`: a flush of results and the claim of the
        slots they free, in one transaction). It runs under a SAVEPOINT, so an inner write that fails
        (a poison row, which the caller then retries in smaller pieces) is undone alone; a caller
        that never retries part of its work (the claim) passes `savepoint=False` and saves the round
        trips."""
        outer = getattr(self._local, "conn", None)
        if outer is not None:
            if not savepoint:
                yield outer
                return
            if getattr(self._local, "optimistic", False):
                try:
                    yield outer
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    raise CarefulRetry() from exc
                return
            with outer.begin_nested():
                yield outer
            return
        with self._writer.begin() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextlib.contextmanager
    def optimistic(self) -> Iterator[None]:
        """Inside: nested `write()`s open no savepoint (SAVEPOINT and RELEASE were a fifth of an
        executor's flush); one that fails for its rows raises `CarefulRetry` out of the outer
        transaction, which rolls it back whole, and the caller writes the batch again outside this
        block, where each nested write has its savepoint and can be retried in pieces."""
        self._local.optimistic = True
        try:
            yield
        finally:
            self._local.optimistic = False

    def close(self) -> None:
        self.engine.dispose()

    # -- migrations -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision; cheap when it already is."""
        with self._migrate_lock:
            if self._migrated:
                return
            try:
                current = self._current_revision()
                if current is not None and current not in known_revisions():
                    raise _newer_store(current, self.engine.url)
                if current != SCHEMA_REVISION:
                    with self._exclusive_migration():
                        if self._current_revision() != SCHEMA_REVISION:
                            self._run_alembic()
            except (sa.exc.DBAPIError, OSError) as exc:
                error = user_error(exc, self.engine.url)
                if error is None:
                    raise
                raise error from None
            self._migrated = True

    def _current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @contextlib.contextmanager
    def _exclusive_migration(self) -> Iterator[None]:
        """Serialise concurrent first uses: a file lock for SQLite, an advisory lock for PostgreSQL."""
        if self.is_sqlite:
            path = _sqlite_file(self.engine.url)
            if path is None:
                yield
                return
            with open(path.with_name(path.name + ".migrate.lock"), "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        else:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(84112233)"))
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(84112233)"))
                    conn.commit()

    def _run_alembic(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")



def _newer_store(revision: str, url: object) -> StoreError:
    """A store that a newer abp migrated: alembic would fail with a traceback ("Can't locate revision");
    say it in one line instead, and never downgrade the user's data."""
    return StoreError(f"{where(url)} has schema revision {revision}, newer than this agentic-batch knows "
                      f"(up to {SCHEMA_REVISION}): a newer version of abp upgraded it",
                      hint="upgrade agentic-batch (pip install -U agentic-batch), or use another store "
                           "(ABP_HOME or ABP_DB_URL)")


class Queries:
    """Base of the query classes (one per table family): each runs its statements on the one
    `Database` the `Store` opened, so they share its engine and a thread's open write transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database
