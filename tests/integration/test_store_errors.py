"""Store errors reach users as one line without SQL, parameters or SQLAlchemy's background link, and
the executor's retry wrapper waits out a real SQLite lock. Real drivers, real files, the real CLI."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentic_batch.engine.outage import OutageGuard, StoreUnavailable
from agentic_batch.store import make_engine
from agentic_batch.store.faults import LOCKED, fault_kind, is_transient, user_error
from tests.fixtures.abp import abp
from tests.fixtures.stores import pg_available
from tests.fixtures.web import Web, spec, web  # noqa: F401 (fixture)

SECRET = "TOPSECRET-item-value"


def failing_statement(url: str, sql: str) -> sa.exc.DBAPIError:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql), {"a": SECRET})
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the statement did not fail")


def test_sqlite_driver_errors_never_show_parameters(tmp_path: Path) -> None:
    exc = failing_statement(f"sqlite:///{tmp_path / 's.db'}", "INSERT INTO nosuch VALUES (:a)")
    assert SECRET not in str(exc)  # hide_parameters on the engine
    error = user_error(exc, f"sqlite:///{tmp_path / 's.db'}")
    assert error is not None and not is_transient(exc)
    line = error.one_line()
    assert "no such table" in line and SECRET not in line
    assert "[SQL" not in line and "Background on this error" not in line and "\n" not in line


def test_postgres_driver_errors_never_show_values() -> None:
    ok, why = pg_available()
    if not ok:
        pytest.skip(why)
    import os

    exc = failing_statement(os.environ["ABP_TEST_POSTGRES_URL"], "SELECT CAST(:a AS integer)")
    assert SECRET in str(exc.orig)  # PostgreSQL itself quotes the value in its message...
    line = user_error(exc).one_line()  # type: ignore[union-attr]  # ...which users never see
    assert "invalid input syntax for type integer" in line and SECRET not in line and "[SQL" not in line


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another process holds BEGIN EXCLUSIVE on the store while the block runs."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True); time.sleep(60)\n"), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_cli_on_a_locked_store_prints_one_line_without_sql(tmp_path: Path, abp_home: Path, workdir: Path) -> None:
    (workdir / "items.jsonl").write_text('{"id": 1}\n')
    assert abp("list", cwd=workdir).returncode == 0  # creates the store
    with sqlite_locked(abp_home / "batch.db"):
        result = abp("create", "--name", SECRET, "--jsonl", "items.jsonl", "--key", "id", "--worker", "command",
                     "--command", "echo {{ row.id }}", cwd=workdir, env={"ABP_SQLITE_BUSY_SECONDS": "0.2"})
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert "\n" not in line and "is locked" in line and "internal error" not in line
    assert SECRET not in line and "[SQL" not in line and "parameters" not in line and "Background" not in line


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_SQLITE_BUSY_SECONDS", "0.2")


def test_rest_on_a_locked_store_answers_503_in_one_line(short_busy_timeout: None, web: Web,  # noqa: F811
                                                        abp_home: Path) -> None:
    with sqlite_locked(abp_home / "batch.db"):
        response = web.post("/api/jobs", spec(web.workdir, "chatty", name=SECRET))
    assert response.status_code == 503, response.text
    body = response.json()
    assert "is locked" in body["error"] and "lock" in body["hint"]
    assert SECRET not in response.text and "[SQL" not in response.text and "Background" not in response.text


def test_outage_guard_waits_out_a_real_sqlite_lock_and_gives_up_past_the_window(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    backs: list[tuple[str, float]] = []

    def write() -> int:
        conn = sqlite3.connect(path, timeout=0.05)
        try:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
            return 1
        finally:
            conn.close()

    async def run(job):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(None, job)

    guard = OutageGuard(5.0, on_back=lambda kind, seconds: backs.append((kind, seconds)))
    threading.Timer(1.0, lambda: holder.execute("COMMIT")).start()
    assert asyncio.run(guard.call(run, write)) == 1
    assert backs and backs[0][0] == LOCKED and backs[0][1] >= 0.5 and guard.outages == 1

    holder.execute("BEGIN EXCLUSIVE")
    gone: list[StoreUnavailable] = []
    short = OutageGuard(0.5, on_give_up=gone.append)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        asyncio.run(short.call(run, write))
    assert info.value.kind == LOCKED and gone == [info.value] and time.monotonic() - started >= 0.5
    with pytest.raises(StoreUnavailable):  # every later call fails at once
        asyncio.run(short.call(run, lambda: 1))
    holder.execute("COMMIT")
    assert fault_kind(sqlite3.OperationalError("no such table: t")) is None


def test_a_store_a_newer_abp_migrated_is_one_line_and_left_as_it_was(abp_home: Path, workdir: Path) -> None:
    """An older abp on a store a newer one upgraded: alembic would raise "Can't locate revision" with a
    traceback (and must never try to downgrade); the user gets one line saying what happened."""
    from agentic_batch.store.db import SCHEMA_REVISION, known_revisions

    assert SCHEMA_REVISION in known_revisions() and "0001" in known_revisions()
    assert abp("list", cwd=workdir).returncode == 0  # creates the store at this version's head
    with sqlite3.connect(abp_home / "batch.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    result = abp("list", cwd=workdir)
    assert result.returncode == 1, result
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and "internal error" not in line, line
    assert "schema revision 9999, newer than this agentic-batch knows" in line and "upgrade agentic-batch" in line
    with sqlite3.connect(abp_home / "batch.db") as conn:  # nothing touched
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
