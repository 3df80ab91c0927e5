"""The read, claim and lease queries find their units through indexes (SQLite's EXPLAIN QUERY PLAN of
the statements the store actually runs), the partial ones included: four unit indexes hold only the
units with a lease owner, a finish time, a fingerprint or a cached origin (migration 0016), which a
query can use only when its own conditions imply that; a query that stopped implying it would scan
the job's units instead, and fail here. The direct reads of `abp list` / `status` / `show` are also
checked on PostgreSQL (its EXPLAIN, sequential scans priced out), when ABP_TEST_POSTGRES_URL answers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from agentic_batch.store import NewUnit, Store
from agentic_batch.store.schema import units
from agentic_batch.store.storable import storable_text

N = 3_000


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    from agentic_batch.store import open_store

    opened = open_store(f"sqlite:///{tmp_path / 'plans.db'}")
    yield opened
    opened.close()


def _job(store: Store, name: str) -> int:
    return store.jobs.insert_job(name=name, status="RUNNING", source={"kind": "jsonl", "path": "x"},
                                 prompt_template="{{ x }}", worker="command", worker_options={"command": "true"},
                                 concurrency=8, max_retries=1, timeout_s=60.0, priority=1, workdir="/tmp",
                                 cache=True)


@pytest.fixture
def jobs(store: Store) -> tuple[int, int]:
    """A job of N units (some finished, failed, fingerprinted, cached, leased) and an earlier one."""
    earlier, job = _job(store, "earlier"), _job(store, "big")
    for job_id in (earlier, job):
        store.units.insert_units(job_id, [NewUnit(seq=i, key=f"k{i}", payload={"x": i}) for i in range(N)])
    now = time.time()
    with store.database.write() as conn:
        conn.execute(sa.update(units).where(units.c.job_id == earlier).values(
            status="COMPLETED", fingerprint=units.c.key, finished_at=now - 100, output="o"))
        conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq < 600).values(
            status="COMPLETED", started_at=now - 50, finished_at=now - units.c.seq * 0.01, cost_usd=0.001,
            fingerprint=units.c.key))
        conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq >= 600, units.c.seq < 700).values(
            status="FAILED", error="boom", error_signature="boom", error_class="permanent", finished_at=now - 5))
        conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq < 100).values(cached_from=1))
    store.units.claim_units("owner-1", [job], 4, 60.0)
    return earlier, job


@contextlib.contextmanager
def _statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if not executemany and re.search(r"\bunits\b", statement) and statement.lstrip().upper().startswith(
                ("SELECT", "UPDATE", "WITH")):
            seen.append((statement, parameters))

    sa.event.listen(store.database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", record)


def _plans(store: Store, call: Callable[[], Any]) -> list[str]:
    """The query plan lines of every statement on units that `call` runs."""
    with _statements(store) as seen:
        call()
    assert seen, "the call ran no statement on units"
    path = store.database.engine.url.database
    lines: list[str] = []
    with contextlib.closing(sqlite3.connect(str(path))) as conn:
        for statement, parameters in seen:
            lines += [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
    return lines


def _check(lines: list[str], index: str) -> None:
    assert any(index in line for line in lines), f"{index} not used: {lines}"
    scans = [line for line in lines if re.fullmatch(r"SCAN units( AS \w+)?", line)]
    assert not scans, f"a full scan of units: {lines}"


def test_status_and_claim_queries_use_their_indexes(store: Store, jobs: tuple[int, int]) -> None:
    _, job = jobs
    _check(_plans(store, lambda: store.units.count_units(job)), "COVERING INDEX")
    _check(_plans(store, lambda: store.units.claim_units("owner-2", [job], 2, 60.0)), "ix_units_claim")
    _check(_plans(store, lambda: store.browse.running_unit_states(job)), "ix_units_claim")
    _check(_plans(store, lambda: store.errors.error_groups(job)), "ix_units_job_error")


def test_a_create_looks_its_keys_up_on_the_unique_index(store: Store, jobs: tuple[int, int]) -> None:
    _, job = jobs
    batch = [NewUnit(seq=N + i, key=f"k{i}", payload={"x": i}) for i in range(N - 5, N + 5)]
    # the (job_id, key) unique constraint: SQLite names its index sqlite_autoindex_units_N
    _check(_plans(store, lambda: store.units.insert_units(job, batch)),
           "INDEX sqlite_autoindex_units_1 (job_id=? AND key=?)")
    assert sum(store.units.count_units(job).values()) == N + 5  # k2995..k2999 were there already


def test_lease_queries_use_the_partial_lease_owner_index(store: Store, jobs: tuple[int, int]) -> None:
    _check(_plans(store, lambda: store.units.owner_counts("owner-1")), "ix_units_lease_owner")
    _check(_plans(store, lambda: store.units.renew_leases("owner-1", 60.0)), "ix_units_lease_owner")
    _check(_plans(store, lambda: store.units.release_units("owner-1")), "ix_units_lease_owner")


def test_rate_and_recent_units_use_the_partial_finished_index(store: Store, jobs: tuple[int, int]) -> None:
    _, job = jobs
    since = time.time() - 60
    _check(_plans(store, lambda: store.units.finished_since(job, since)), "ix_units_job_finished")
    _check(_plans(store, lambda: store.browse.finished_unit_states(job, since)), "ix_units_job_finished")
    _check(_plans(store, lambda: store.browse.finished_buckets(job, since, since, 5.0)), "ix_units_job_finished")


def test_browse_sorts_walk_their_indexes(store: Store, jobs: tuple[int, int]) -> None:
    _, job = jobs
    _check(_plans(store, lambda: store.browse.browse_units(job, sort="cost", offset=1000)), "ix_units_job_cost")
    _check(_plans(store, lambda: store.browse.browse_units(job, sort="duration", descending=True)),
           "ix_units_job_duration")
    _check(_plans(store, lambda: store.browse.browse_units(job, sort="number", offset=2000)), "ux_units_job_number")


def test_cache_queries_use_the_partial_fingerprint_and_origin_indexes(store: Store, jobs: tuple[int, int]) -> None:
    earlier, job = jobs

    def lookup() -> None:
        with store.database.read() as conn:
            assert store.cache._lookup(conn, job, [storable_text(f"k{i}") for i in range(10)])

    _check(_plans(store, lookup), "ix_units_fingerprint")
    _check(_plans(store, lambda: store.cache.cached_count(job)), "ix_units_job_cached")
    _check(_plans(store, lambda: store.cache.cost_basis(job)), "ix_units_job_cached")
    assert store.cache.cached_count(job) == 100 and store.cache.cached_count(earlier) == 0
    assert store.units.owner_counts("owner-1") == {"RUNNING": 4}


def test_a_created_unit_enters_none_of_the_partial_indexes(store: Store, jobs: tuple[int, int]) -> None:
    """What the partial indexes save: a pending unit is in none of them; a finished one is."""
    path = store.database.engine.url.database
    with contextlib.closing(sqlite3.connect(str(path))) as conn:
        def entries(index: str) -> int:
            return int(conn.execute(f"SELECT count(*) FROM units INDEXED BY {index} WHERE "
                                    f"{_PREDICATE[index]} IS NOT NULL").fetchone()[0])

        assert entries("ix_units_lease_owner") == 4
        assert entries("ix_units_job_finished") == 2 * N - (N - 700)
        assert entries("ix_units_fingerprint") == N + 600
        assert entries("ix_units_job_cached") == 100
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall())
    for index, column in _PREDICATE.items():
        assert sql[index].endswith(f"WHERE {column} IS NOT NULL"), sql[index]


_PREDICATE = {"ix_units_lease_owner": "lease_owner", "ix_units_job_finished": "finished_at",
              "ix_units_fingerprint": "fingerprint", "ix_units_job_cached": "cached_from"}


def test_the_direct_reads_can_each_use_an_index_on_postgresql(monkeypatch: pytest.MonkeyPatch, workdir: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`abp list` / `status` / `show` on PostgreSQL (`store.direct` on libpq): with sequential scans priced
    out (`enable_seqscan = off`), the planner finds an index for every statement they send, so none of
    them needs to read a whole table (on a big job the planner may still prefer a scan, rightly)."""
    import json

    from agentic_batch.cli import quick
    from agentic_batch.store import libpq
    from agentic_batch.store.direct import open_direct
    from tests.fixtures.stores import orchestrator_on

    with orchestrator_on("postgresql", monkeypatch) as orch:
        (workdir / "items.jsonl").write_text("".join(json.dumps({"t": i}) + "\n" for i in range(50)))
        job = orch.create({"name": "plans", "source": {"kind": "jsonl", "path": str(workdir / "items.jsonl")},
                           "prompt": "{{ t }}", "worker": "command", "worker_options": {"command": "true"}},
                          cwd=workdir).job_id
        with orch.store.database.write() as conn:
            conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq < 5).values(
                status="RUNNING", started_at=time.time(), lease_owner="x", attempt=1))
            conn.execute(sa.text("UPDATE jobs SET status = 'RUNNING' WHERE id = :j"), {"j": job})
        sent: list[tuple[str, tuple[Any, ...]]] = []
        execute = libpq.Connection.execute

        def record(self: libpq.Connection, sql: str, params: Any = ()) -> Any:
            sent.append((sql, tuple(params)))
            return execute(self, sql, params)

        monkeypatch.setattr(libpq.Connection, "execute", record)
        for argv in (["list"], ["status", str(job)], ["show", str(job), "1"]):
            assert quick.answer(argv) == 0, argv  # answered on the direct path
        capsys.readouterr()
        monkeypatch.setattr(libpq.Connection, "execute", execute)
        reads = open_direct(os.environ["ABP_DB_URL"])
        try:
            reads.conn.execute("SET enable_seqscan = off")
            statements = {s for s in sent if s[0].startswith("SELECT") and "alembic_version" not in s[0]}
            assert len(statements) >= 8, statements
            for sql, params in sorted(statements):
                plan = [row[0] for row in reads.conn.execute("EXPLAIN " + sql, params).fetchall()]
                assert not [line for line in plan if "Seq Scan" in line], f"{sql}\n" + "\n".join(plan)
        finally:
            reads.close()
