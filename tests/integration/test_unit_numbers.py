"""Units have a per-job number 1..N, dense and unique, on SQLite and PostgreSQL alike: given at
insert (duplicate keys get none), continued by later inserts (`abp sync`), and given to the units of
a store made before numbers existed by the migration."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from agentic_batch.store import NewUnit, Store, open_store
from agentic_batch.store.schema import units
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)


@pytest.fixture
def store(store_url: str):  # noqa: F811
    s = open_store(store_url)
    yield s
    s.close()


def new_job(store: Store, name: str) -> int:
    return store.jobs.insert_job(name=name, status="CREATED", source={"kind": "jsonl"}, worker="python",
                                 worker_options={}, concurrency=1, max_retries=0, timeout_s=10, workdir="/tmp")


def numbered(store: Store, job: int) -> dict[str, int]:
    return {u.key: u.number for u in store.units.iter_units(job)}


def test_numbers_are_dense_per_job_and_skip_duplicate_keys(store: Store) -> None:
    first, second = new_job(store, "a"), new_job(store, "b")
    assert store.units.insert_units(first, [NewUnit(seq=i, key=k, payload={}) for i, k in enumerate("xyxz")]) == 3
    assert numbered(store, first) == {"x": 1, "y": 2, "z": 3}
    # A later batch (a second create batch, or sync) numbers on; a known key gets no number.
    assert store.units.insert_units(first, [NewUnit(seq=10, key="y", payload={}), NewUnit(seq=11, key="w", payload={}),
                                            NewUnit(seq=12, key="w", payload={})]) == 1
    assert numbered(store, first) == {"x": 1, "y": 2, "z": 3, "w": 4}
    assert store.units.insert_units(second, [NewUnit(seq=i, key=str(i + 2), payload={}) for i in range(3)]) == 3
    assert numbered(store, second) == {"2": 1, "3": 2, "4": 3}  # every job starts at 1

    one = store.browse.unit_by_number(second, 1)
    assert one is not None and one.key == "2" and one.job_id == second
    assert store.browse.unit_by_number(second, 4) is None
    assert store.browse.unit_by_key(second, "3").number == 2  # type: ignore[union-attr]
    assert store.browse.unit_by_key(second, "1") is None
    assert store.browse.unit_numbers([one.id, store.browse.unit_by_number(first, 4).id]) == {  # type: ignore[union-attr]
        one.id: 1, store.browse.unit_by_number(first, 4).id: 4}  # type: ignore[union-attr]
    # The claim carries the number, so the engine's log lines can name it.
    claimed = store.units.claim_units("w", [second], 1, lease_seconds=60)
    assert [u.number for u in claimed] == [1]

    with pytest.raises(sa.exc.IntegrityError), store.database.write() as conn:  # two units never share a number
        conn.execute(sa.insert(units).values(job_id=second, seq=99, number=2, key="dup", payload={},
                                             status="PENDING"))


def _numbers_migration() -> tuple[str, str]:
    """(revision, down_revision) of the migration that adds unit numbers, wherever it sits in the chain."""
    from alembic.script import ScriptDirectory

    from agentic_batch.store.db import _MIGRATIONS

    for script in ScriptDirectory(str(_MIGRATIONS)).walk_revisions():
        if "per-job number" in (script.doc or "") + (script.longdoc or ""):
            return script.revision, str(script.down_revision)
    raise AssertionError("no unit-number migration found")


def test_migration_numbers_the_units_of_an_older_store(store_url: str) -> None:  # noqa: F811
    from alembic import command
    from alembic.config import Config

    from agentic_batch.store.db import _MIGRATIONS

    _, before = _numbers_migration()
    engine = sa.create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, before)
        job_ids = []
        for name in ("old-a", "old-b"):
            job_ids.append(conn.execute(sa.text(
                "INSERT INTO jobs (name, status, source, worker, worker_options, concurrency, max_retries, "
                "timeout_s, priority, workdir, created_at) VALUES (:n, 'CREATED', '{}', 'python', '{}', 1, 0, "
                "10, 1, '/tmp', 0) RETURNING id"), {"n": name}).scalar_one())
        # Gaps in seq (duplicates skipped at create, sync appended after them), interleaved jobs.
        for job, seq, key in [(job_ids[0], 0, "a0"), (job_ids[1], 0, "b0"), (job_ids[0], 5, "a5"),
                              (job_ids[0], 2, "a2"), (job_ids[1], 9, "b9")]:
            conn.execute(sa.text("INSERT INTO units (job_id, seq, key, payload, status) "
                                 "VALUES (:j, :s, :k, '{}', 'PENDING')"), {"j": job, "s": seq, "k": key})
    engine.dispose()

    store = open_store(store_url)  # migrates to the head
    try:
        assert numbered(store, job_ids[0]) == {"a0": 1, "a2": 2, "a5": 3}
        assert numbered(store, job_ids[1]) == {"b0": 1, "b9": 2}
        assert store.units.insert_units(job_ids[1], [NewUnit(seq=10, key="b10", payload={})]) == 1
        assert numbered(store, job_ids[1])["b10"] == 3
    finally:
        store.close()
