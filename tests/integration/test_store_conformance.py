"""The store's contract, run unchanged against SQLite and PostgreSQL (a driver conformance suite)."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from agentic_batch.store import NewEvent, NewUnit, Store, UnitResult, open_store
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)


@pytest.fixture
def store(store_url: str):  # noqa: F811
    s = open_store(store_url)
    yield s
    s.close()


def make_job(store: Store, name: str = "j", priority: int = 1, units: int = 0, concurrency: int = 1000) -> int:
    job_id = store.jobs.insert_job(name=name, status="RUNNING", source={"kind": "jsonl"}, worker="python",
                                   worker_options={}, concurrency=concurrency, max_retries=2, timeout_s=10,
                                   workdir="/tmp", priority=priority)
    if units:
        store.units.insert_units(job_id, [NewUnit(seq=i, key=f"k{i}", payload={"i": i}) for i in range(units)])
    return job_id


def test_migrations_match_the_schema(store: Store) -> None:
    """What Alembic created is exactly what schema.py describes (no drift between the two)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from agentic_batch.store.schema import metadata

    with store.database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_reopening_is_idempotent(store: Store) -> None:
    again = open_store(store.url)
    assert again.jobs.list_jobs() == []
    again.close()


def test_insert_dedupes_keys(store: Store) -> None:
    job = make_job(store, units=5)
    added = store.units.insert_units(job, [NewUnit(seq=10 + i, key=f"k{i}", payload={}) for i in range(3, 8)])
    assert added == 3  # k5, k6, k7 are new; k3, k4 were there
    assert store.units.count_units(job)["PENDING"] == 8


def test_claim_respects_limit_and_leases(store: Store) -> None:
    job = make_job(store, units=10)
    first = store.units.claim_units("a", [job], 4, lease_seconds=60)
    second = store.units.claim_units("b", [job], 100, lease_seconds=60)
    assert len(first) == 4 and len(second) == 6
    assert not {u.id for u in first} & {u.id for u in second}
    assert all(u.attempt == 1 and u.status == "RUNNING" for u in first + second)
    assert store.units.claim_units("c", [job], 5, lease_seconds=60) == []


def test_the_claim_caps_running_units_at_the_job_concurrency(store: Store) -> None:
    """Concurrency is job-wide: whoever claims, a job never has more RUNNING units than its concurrency."""
    job = make_job(store, units=20, concurrency=5)
    assert len(store.units.claim_units("a", [job], 3, 60)) == 3
    assert len(store.units.claim_units("b", [job], 10, 60)) == 2  # 5 - 3 running
    assert store.units.claim_units("c", [job], 10, 60) == []
    done = store.units.claim_units("x", [job], 0, 60)
    assert done == [] and store.units.count_units(job)["RUNNING"] == 5
    [unit] = [u for u in store.units.running_units(job) if u.lease_owner == "b"][:1]
    store.units.apply_results("b", [UnitResult(unit_id=unit.id, attempt=1, status="COMPLETED", output="ok")])
    assert len(store.units.claim_units("c", [job], 10, 60)) == 1  # its slot is free again


def test_simultaneous_claims_stay_within_the_job_concurrency(store: Store) -> None:
    """Eight claimers at once (on PostgreSQL, eight transactions that would each count 0 RUNNING without
    the job-row lock) still leave exactly the job's concurrency RUNNING."""
    job = make_job(store, units=200, concurrency=6)
    start = threading.Barrier(8)
    got: list[int] = []

    def claimer(name: str) -> None:
        own = Store(store.url)
        start.wait()
        got.append(len(own.units.claim_units(name, [job], 4, 60)))
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 6 and store.units.count_units(job)["RUNNING"] == 6


def test_claim_order_honours_job_then_unit_priority(store: Store) -> None:
    low = make_job(store, "low", priority=0)
    high = make_job(store, "high", priority=3)
    store.units.insert_units(low, [NewUnit(seq=i, key=f"l{i}", payload={}, priority=5) for i in range(3)])
    store.units.insert_units(high, [NewUnit(seq=0, key="h0", payload={}, priority=0),
                                    NewUnit(seq=1, key="h1", payload={}, priority=2)])
    order = [u.key for u in store.units.claim_units("x", [low, high], 3, lease_seconds=60)]
    assert order == ["h1", "h0", "l0"]


def test_not_before_delays_a_unit(store: Store) -> None:
    job = make_job(store, units=1)
    unit = store.units.claim_units("a", [job], 1, 60)[0]
    store.units.apply_results("a", [UnitResult(unit_id=unit.id, attempt=1, status="PENDING", error="x",
                                               error_class="retryable", count_error=True, not_before=time.time() + 30)])
    assert store.units.claim_units("a", [job], 1, 60) == []
    assert store.units.next_not_before(job) > time.time()
    later = store.units.claim_units("a", [job], 1, 60, now=time.time() + 31)
    assert [u.id for u in later] == [unit.id] and later[0].attempt == 2 and later[0].error_count == 1


def test_expired_lease_is_reclaimed_by_the_claim(store: Store) -> None:
    job = make_job(store, units=1)
    store.units.claim_units("dead", [job], 1, lease_seconds=0.01)
    time.sleep(0.05)
    taken = store.units.claim_units("alive", [job], 1, lease_seconds=60)
    assert len(taken) == 1 and taken[0].attempt == 2


def test_heartbeat_keeps_a_lease(store: Store) -> None:
    job = make_job(store, units=1)
    store.units.claim_units("a", [job], 1, lease_seconds=0.2)
    assert store.units.renew_leases("a", lease_seconds=60) == 1
    time.sleep(0.3)
    assert store.units.claim_units("b", [job], 1, lease_seconds=60) == []


def test_results_are_fenced_by_owner_and_attempt(store: Store) -> None:
    """Only the current lease holder writes a result: exactly-once completion after a takeover."""
    job = make_job(store, units=1)
    unit = store.units.claim_units("old", [job], 1, lease_seconds=0.01)[0]
    time.sleep(0.05)
    new = store.units.claim_units("new", [job], 1, lease_seconds=60)[0]
    assert store.units.apply_results("old", [UnitResult(unit_id=unit.id, attempt=1, status="COMPLETED",
                                                        output="stale")]) == []
    assert store.units.apply_results("new", [UnitResult(unit_id=new.id, attempt=2, status="COMPLETED",
                                                        output="fresh", cost_usd=0.5)]) == [new.id]
    final = store.units.get_unit(unit.id)
    assert final.status == "COMPLETED" and final.output == "fresh" and final.cost_usd == 0.5
    # a late duplicate from the same owner cannot complete it twice
    assert store.units.apply_results("new", [UnitResult(unit_id=new.id, attempt=2, status="COMPLETED",
                                                        output="again")]) == []


def test_release_returns_units_to_pending(store: Store) -> None:
    job = make_job(store, units=3)
    store.units.claim_units("a", [job], 3, 60)
    assert store.units.release_units("a") == 3
    assert store.units.count_units(job)["PENDING"] == 3


def test_concurrent_claims_never_share_a_unit(store: Store) -> None:
    job = make_job(store, units=300)
    got: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        own = Store(store.url)
        mine: list[int] = []
        while batch := own.units.claim_units(name, [job], 7, 60):
            mine.extend(u.id for u in batch)
        got[name] = mine
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for ids in got.values() for i in ids]
    assert len(all_ids) == 300 and len(set(all_ids)) == 300


def test_counts_totals_and_rate(store: Store) -> None:
    job = make_job(store, units=4)
    units = store.units.claim_units("a", [job], 3, 60)
    store.units.apply_results("a", [
        UnitResult(unit_id=units[0].id, attempt=1, status="COMPLETED", cost_usd=0.25, tokens_in=10, tokens_out=5),
        UnitResult(unit_id=units[1].id, attempt=1, status="FAILED", error="bad", error_class="permanent",
                   cost_usd=0.5),
    ])
    counts = store.units.count_units(job)
    assert counts == {"PENDING": 1, "RUNNING": 1, "COMPLETED": 1, "FAILED": 1, "CANCELLED": 0}
    totals = store.units.unit_totals(job)
    assert totals == {"cost_usd": 0.75, "tokens_in": 10, "tokens_out": 5}
    assert store.units.finished_since(job, time.time() - 60) == 2


def test_events_paged_in_order(store: Store) -> None:
    job = make_job(store, units=1)
    unit = store.units.claim_units("a", [job], 1, 60)[0]
    store.events.append_events([NewEvent(job_id=job, unit_id=unit.id, attempt=1, seq=i, ts=time.time(), kind="k",
                                         data={"i": i}) for i in range(5)])
    first = store.events.list_events(unit_id=unit.id, limit=2)
    rest = store.events.list_events(unit_id=unit.id, after=first[-1].id)
    assert [e.data["i"] for e in first + rest] == [0, 1, 2, 3, 4]
    assert store.events.latest_events([unit.id])[unit.id].data == {"i": 4}


def test_iter_units_is_paged(store: Store) -> None:
    job = make_job(store, units=25)
    seqs = [u.seq for u in store.units.iter_units(job, batch_size=7)]
    assert seqs == list(range(25))


def test_update_job_is_guarded_by_status(store: Store) -> None:
    job = make_job(store)
    assert not store.jobs.update_job(job, expect=["PAUSED"], status="COMPLETED")
    assert store.jobs.update_job(job, expect=["RUNNING"], status="PAUSED")
    assert store.jobs.get_job(job).status == "PAUSED"


def test_delete_job_removes_everything(store: Store) -> None:
    job = make_job(store, units=3)
    store.logs.append_logs([{"job_id": job, "level": "info", "message": "x"}])
    store.jobs.delete_job(job)
    assert store.jobs.get_job(job) is None
    with store.database.read() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM units")).scalar() == 0


def test_page_units_pages_in_seq_order_with_a_filter(store: Store) -> None:
    job = make_job(store, units=10)
    for unit in store.units.claim_units("a", [job], 4, 60):
        store.units.apply_results("a", [UnitResult(unit_id=unit.id, attempt=1, status="COMPLETED")])
    assert [u.seq for u in store.units.page_units(job, None, 3, 4)] == [4, 5, 6]
    assert [u.seq for u in store.units.page_units(job, ["PENDING"], 10, 2)] == [6, 7, 8, 9]
