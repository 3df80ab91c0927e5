"""store.batches on both stores: the intent row and its leased units in one step, fenced results, and
units in a provider batch left out of the claim's concurrency count and out of every claim."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agentic_batch.store import Store, UnitResult, open_store
from agentic_batch.store.records import batch_owner
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)
from tests.integration.test_store_conformance import make_job


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_open_batch_leases_units_to_the_batch_and_claims_skip_them(store: Store) -> None:
    job = make_job(store, units=10, concurrency=2)
    opened = store.batches.open_batch(job, "openai", 6)
    assert opened is not None
    row, units = opened
    assert row.state == "intent" and row.provider_id is None and row.units == 6
    assert row.tag.startswith(f"abp-j{job}-b{row.id}-")
    assert [u.attempt for u in units] == [1] * 6 and [u.seq for u in units] == sorted(u.seq for u in units)
    assert {u.id for u in store.batches.leased_units(row.id)} == {u.id for u in units}
    # the claim still gets the job's full concurrency: batch units are no agent's
    claimed = store.units.claim_units("ex1", [job], 10, 30.0)
    assert len(claimed) == 2 and not {u.id for u in claimed} & {u.id for u in units}
    # a claim long after every executor lease expired still never takes a batch's units
    later = store.units.claim_units("ex2", [job], 10, 30.0, now=time.time() + 7 * 24 * 3600)
    assert not {u.id for u in later} & {u.id for u in units}
    assert store.batches.batch_totals(job) == {"batches": 1, "projected_usd": 0.0, "units": 6}


def test_results_are_fenced_by_the_batch_and_the_rest_released(store: Store) -> None:
    job = make_job(store, units=3)
    opened = store.batches.open_batch(job, "openai", 3)
    assert opened is not None
    row, units = opened
    first, second, third = units
    ok = UnitResult(unit_id=first.id, attempt=1, prompt="p", status="COMPLETED", output="done", cost_usd=0.5)
    stale = UnitResult(unit_id=second.id, attempt=0, prompt="p", status="COMPLETED", output="old")
    assert store.units.apply_results(batch_owner(row.id), [ok, stale]) == [first.id]
    assert store.units.apply_results("someone-else", [
        UnitResult(unit_id=third.id, attempt=1, prompt="p", status="COMPLETED", output="x")]) == []
    assert store.units.release_units(row.owner) == 2
    counts = store.units.count_units(job)
    assert (counts["COMPLETED"], counts["PENDING"], counts["RUNNING"]) == (1, 2, 0)
    store.batches.update_batch(row.id, provider_id="batch_1", state="done")
    assert store.batches.list_batches(job, live_only=True) == [] and store.batches.count_submitted(job) == 1
    again = store.batches.open_batch(job, "openai", 10)
    assert again is not None and [u.attempt for u in again[1]] == [2, 2]


def test_nothing_pending_opens_no_batch(store: Store) -> None:
    job = make_job(store, units=0)
    assert store.batches.open_batch(job, "openai", 5) is None
    assert store.batches.list_batches(job) == []
