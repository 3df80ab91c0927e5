"""The browse queries (units table, change feed, charts, stats, logs), run unchanged on SQLite and
PostgreSQL: same rows, same order, same NULL placement."""

from __future__ import annotations

import time

import pytest

from agentic_batch.store import NewUnit, Store, UnitResult, open_store
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)

T0 = 1_700_000_000.0


@pytest.fixture
def store(store_url: str):  # noqa: F811
    s = open_store(store_url)
    yield s
    s.close()


def finish(store: Store, job: int, results: dict[int, tuple[str, float, float, float]]) -> None:
    """seq -> (status, cost, started, finished): claim every unit, then write these results."""
    claimed = {u.seq: u for u in store.units.claim_units("w", [job], 10_000, lease_seconds=600)}
    store.units.apply_results("w", [UnitResult(unit_id=claimed[seq].id, attempt=1, status=status, cost_usd=cost,
                                               output=f"out {seq}", error="boom" if status == "FAILED" else None,
                                               finished_at=finished)
                                    for seq, (status, cost, _, finished) in results.items()])
    unfinished = [u.id for seq, u in claimed.items() if seq not in results]
    store.units.release_units("w", unfinished)
    with store.database.write() as conn:  # started_at as given, for exact durations
        from sqlalchemy import update

        from agentic_batch.store.schema import units
        for seq, (_, _, started, _) in results.items():
            conn.execute(update(units).where(units.c.id == claimed[seq].id).values(started_at=started))


@pytest.fixture
def job(store: Store) -> int:
    job_id = store.jobs.insert_job(name="browse", status="RUNNING", source={"kind": "jsonl"}, worker="python",
                                   worker_options={}, concurrency=10_000, max_retries=0, timeout_s=10, workdir="/tmp")
    store.units.insert_units(job_id, [NewUnit(seq=i, key=f"file_{i:03d}.txt", payload={"i": i}) for i in range(30)])
    # seq 0-9 completed (cost and duration grow with seq), 10-11 failed, the rest pending.
    done = {i: ("COMPLETED", 0.01 * i, T0 + i, T0 + i + 1 + i) for i in range(10)}
    done.update({10: ("FAILED", 0.5, T0 + 20, T0 + 21), 11: ("FAILED", 0.0, T0 + 30, T0 + 60)})
    finish(store, job_id, done)
    return job_id


def keys(rows: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [r["key"] for r in rows]


def test_units_page_sorts_filters_and_pages(store: Store, job: int) -> None:
    rows, total = store.browse.browse_units(job, limit=5)
    assert total == 30 and keys(rows) == [f"file_{i:03d}.txt" for i in range(5)]
    rows, _ = store.browse.browse_units(job, limit=5, offset=27)
    assert [r["seq"] for r in rows] == [27, 28, 29]
    rows, _ = store.browse.browse_units(job, sort="cost", descending=True, limit=3)
    assert [r["seq"] for r in rows] == [10, 9, 8]
    rows, _ = store.browse.browse_units(job, sort="duration", descending=True, limit=3)
    assert [r["seq"] for r in rows] == [11, 9, 8] and rows[0]["duration_s"] == 30.0
    rows, _ = store.browse.browse_units(job, sort="duration", limit=3)  # unfinished first ascending, by id
    assert [r["seq"] for r in rows] == [12, 13, 14] and rows[0]["duration_s"] is None
    rows, _ = store.browse.browse_units(job, sort="duration", descending=True, offset=12, limit=2)
    assert [r["seq"] for r in rows] == [29, 28]  # unfinished last descending, by id descending
    rows, total = store.browse.browse_units(job, statuses=["FAILED"], sort="key", descending=True)
    assert total == 2 and [r["seq"] for r in rows] == [11, 10] and rows[0]["error_preview"] == "boom"
    rows, total = store.browse.browse_units(job, statuses=["COMPLETED", "FAILED"], sort="cost", limit=2)
    assert total == 12 and [r["seq"] for r in rows] == [0, 11]  # equal cost: id breaks the tie


def test_units_search_is_case_insensitive_and_literal(store: Store, job: int) -> None:
    assert store.browse.browse_units(job, search="FILE_02")[1] == 10
    assert store.browse.browse_units(job, search="OUT 3")[1] == 1  # output matches
    assert store.browse.browse_units(job, search="Boom")[1] == 2  # errors match
    assert store.browse.browse_units(job, search="%")[1] == 0  # LIKE wildcards are literal
    assert store.browse.browse_units(job, search="file_0_1")[1] == 0
    number = store.browse.browse_units(job, limit=1, offset=4)[0][0]["number"]
    assert number == 5 and number in [r["number"] for r in store.browse.browse_units(job, search=str(number))[0]]


def test_change_feed_and_states(store: Store, job: int) -> None:
    running = store.units.claim_units("w2", [job], 2, lease_seconds=60)
    states = store.browse.running_unit_states(job)
    assert [s["number"] for s in states] == [u.number for u in running] and states[0]["status"] == "RUNNING"
    assert all("id" not in s for s in states)  # rows name units by number
    finished = store.browse.finished_unit_states(job, since=T0 + 10, limit=2)  # the newest two, oldest first
    assert [s["seq"] for s in finished] == [10, 11]
    assert len(store.browse.finished_unit_states(job, since=0)) == 12
    assert {s["status"] for s in store.browse.unit_states(job, [running[0].number, 999_999])} == {"RUNNING"}


def test_buckets_stats_logs_and_last_event(store: Store, job: int) -> None:
    buckets = store.browse.finished_buckets(job, since=0, start=T0, width=10)
    completed = {b["bucket"]: b["n"] for b in buckets if b["status"] == "COMPLETED"}
    assert completed == {0: 5, 1: 5}  # finished at T0+1, +3, ..., +19
    assert {b["bucket"] for b in buckets if b["status"] == "FAILED"} == {2, 6}
    assert round(sum(b["cost"] for b in buckets), 6) == 0.95
    before = store.browse.finished_buckets(job, since=0, start=T0 + 5, width=10)
    assert min(b["bucket"] for b in before) in (-1, 0)  # a unit finished before `start`: clamped by callers
    counts = store.browse.global_counts()
    assert counts["units"] == {"COMPLETED": 10, "FAILED": 2, "PENDING": 18} and counts["jobs"] == {"RUNNING": 1}
    assert store.browse.finished_since_all(T0) == 12 and store.browse.finished_since_all(time.time() + 10) == 0

    store.logs.append_logs([{"job_id": job, "level": level, "message": f"{level} message {i}", "unit_id": i % 2 or None}
                            for i, level in enumerate(["debug", "info", "warning", "error", "info"])])
    logs = store.browse.browse_logs(job, min_level="info", limit=2)
    assert [r.message for r in logs] == ["info message 4", "error message 3"]
    older = store.browse.browse_logs(job, min_level="info", before=logs[-1].id)
    assert [r.message for r in older] == ["warning message 2", "info message 1"]
    assert [r.message for r in store.browse.browse_logs(job, text="WARNING")] == ["warning message 2"]
    assert [r.message for r in store.browse.browse_logs(job, unit_id=1)] == ["error message 3", "info message 1"]
    assert store.browse.last_event_id(job) == 0
