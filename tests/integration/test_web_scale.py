"""The units table of a 100,000-unit job through the API: right rows, right order, right totals,
and every page answered quickly (each walks an index; nothing sorts or loads the whole job)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from agentic_batch.store import NewUnit
from agentic_batch.store.schema import units
from tests.fixtures.web import Web, spec, web  # noqa: F401  (fixture)

N = 100_000
SLOW_S = 2.0  # generous: two busy cores; typical answers take tens of milliseconds


def big_job(web: Web) -> int:  # noqa: F811
    """One real job, then 100,000 more units in bulk; a third completed with cost and duration by seq."""
    job = web.ok("POST", "/api/jobs", spec(web.workdir, "fail_some", n=1), status=201)["job_id"]
    store = web.orch.store
    for start in range(1, N + 1, 20_000):
        store.units.insert_units(job, [NewUnit(seq=i, key=f"item-{i:06d}", payload={"i": i})
                                       for i in range(start, min(start + 20_000, N + 1))])
    t0 = 1_700_000_000.0
    with store.database.write() as conn:  # fixture data straight into the table: seq % 3 == 0 completed, 1 failed
        conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq % 3 == 0).values(
            status="COMPLETED", started_at=t0 + units.c.seq, finished_at=t0 + units.c.seq + (units.c.seq % 1000) / 10.0,
            cost_usd=(units.c.seq % 997) / 1000.0, output="done " + sa.cast(units.c.seq, sa.String)))
        conn.execute(sa.update(units).where(units.c.job_id == job, units.c.seq % 3 == 1).values(
            status="FAILED", error="boom", finished_at=t0 + units.c.seq, started_at=t0 + units.c.seq))
    return job


def timed(web: Web, path: str) -> dict:  # type: ignore[type-arg]  # noqa: F811
    start = time.perf_counter()
    body = web.ok("GET", path)
    elapsed = time.perf_counter() - start
    assert elapsed < SLOW_S, f"{path} took {elapsed:.2f}s"
    return body


def test_paging_sorting_filtering_100k_units(web: Web) -> None:  # noqa: F811
    job = big_job(web)
    base = f"/api/jobs/{job}/units"
    first = timed(web, f"{base}?limit=50")
    assert first["total"] == N + 1 and [u["seq"] for u in first["items"]] == list(range(50))
    deep = timed(web, f"{base}?limit=50&offset={N - 49}")
    assert [u["seq"] for u in deep["items"]] == list(range(N - 49, N + 1))
    assert timed(web, f"{base}?limit=50&offset={N + 5}")["items"] == []

    completed = N // 3 + 1  # seq 0, 3, ..., 99999
    failed = len(range(1, N + 1, 3))
    assert timed(web, f"{base}?status=completed&limit=1")["total"] == completed
    assert timed(web, f"{base}?status=failed,completed&limit=1")["total"] == completed + failed
    pending = timed(web, f"{base}?status=pending&limit=10&offset=20000")
    assert pending["total"] == N + 1 - completed - failed and all(u["seq"] % 3 == 2 for u in pending["items"])

    by_cost = timed(web, f"{base}?sort=cost&order=desc&limit=100")["items"]
    costs = [u["cost_usd"] for u in by_cost]
    assert costs[0] == 0.996 and costs == sorted(costs, reverse=True)
    same = [u["number"] for u in by_cost if u["cost_usd"] == 0.996]
    assert same == sorted(same, reverse=True)  # ties broken by id (number order), in the same direction
    cheap_deep = timed(web, f"{base}?sort=cost&limit=5&offset=60000")["items"]
    assert [u["cost_usd"] for u in cheap_deep] == sorted(u["cost_usd"] for u in cheap_deep)

    slowest = timed(web, f"{base}?sort=duration&order=desc&status=completed&limit=20")["items"]
    durations = [u["duration_s"] for u in slowest]
    assert durations[0] == 99.9 and durations == sorted(durations, reverse=True)
    unfinished_first = timed(web, f"{base}?sort=duration&limit=3")["items"]
    assert all(u["duration_s"] is None for u in unfinished_first)
    last_key = timed(web, f"{base}?sort=key&order=desc&limit=1")["items"][0]
    assert last_key["key"] == f"item-{N:06d}"

    found = timed(web, f"{base}?q=item-09999&limit=50")
    assert found["total"] == 10 and {u["key"] for u in found["items"]} == {f"item-09999{d}" for d in range(10)}
    assert timed(web, f"{base}?q=done 77778")["total"] == 1
    assert timed(web, f"{base}?q=boom&status=completed")["total"] == 0
    timed(web, f"/api/jobs/{job}")
    timed(web, f"/api/jobs/{job}/timeseries")
    timed(web, "/api/jobs")
