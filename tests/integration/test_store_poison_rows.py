"""Every store write path holds what agents and items throw at it, on SQLite and PostgreSQL: NUL bytes
and lone surrogates are stored as U+FFFD, and a batch the store still refuses because of one row is
split so that only that row's unit fails."""

from __future__ import annotations

import pytest

from agentic_batch.store import NewEvent, NewUnit, Store, UnitResult, open_store
from tests.fixtures.stores import store_url  # noqa: F401  (fixture)


@pytest.fixture
def store(store_url: str):  # noqa: F811
    s = open_store(store_url)
    yield s
    s.close()


def make_job(store: Store, units: int) -> int:
    job_id = store.jobs.insert_job(name="poison\x00job", status="RUNNING", source={"kind": "jsonl"}, worker="python",
                                   worker_options={}, concurrency=100, max_retries=2, timeout_s=10, workdir="/tmp",
                                   prompt_template="say {{ x }}\x00")
    store.units.insert_units(job_id, [NewUnit(seq=i, key=f"k{i}\x00", payload={"text": f"a\x00b{i}"})
                                      for i in range(units)])
    return job_id


def test_nul_and_surrogates_are_stored_as_replacement_characters(store: Store) -> None:
    job = make_job(store, 3)
    record = store.jobs.get_job(job)
    assert record.name == "poison\ufffdjob" and record.prompt_template == "say {{ x }}\ufffd"
    claimed = store.units.claim_units("me", [job], 3, 30)
    assert sorted(u.key for u in claimed) == ["k0\ufffd", "k1\ufffd", "k2\ufffd"]
    assert claimed[0].payload["text"].startswith("a\x00b")  # JSON holds NUL as \u0000 on both stores
    results = [UnitResult(unit_id=claimed[0].id, attempt=1, status="COMPLETED", output="out\x00put",
                          prompt="p\x00", session_id="s" * 500),
               UnitResult(unit_id=claimed[1].id, attempt=1, status="FAILED", error="bad \ud800 text\x00"),
               UnitResult(unit_id=claimed[2].id, attempt=1, status="PENDING", error="retry\x00", not_before=0)]
    assert sorted(store.units.apply_results("me", results)) == sorted(u.id for u in claimed)
    first, second, third = (store.units.get_unit(u.id) for u in claimed)
    assert (first.status, first.output, first.prompt) == ("COMPLETED", "out\ufffdput", "p\ufffd")
    assert len(first.session_id) == 128
    assert (second.status, second.error) == ("FAILED", "bad \ufffd text\ufffd")
    assert (third.status, third.error) == ("PENDING", "retry\ufffd")
    store.jobs.update_job(job, error="died: \x00")
    assert store.jobs.get_job(job).error == "died: \ufffd"


def test_one_refused_result_fails_only_its_unit_and_the_rest_land(store: Store) -> None:
    job = make_job(store, 7)
    claimed = store.units.claim_units("me", [job], 7, 30)
    results = [UnitResult(unit_id=u.id, attempt=1, status="COMPLETED", output=f"ok {u.seq}", tokens_in=3)
               for u in claimed]
    results[4].tokens_in = 10**20  # no integer column holds it (PostgreSQL: out of range; SQLite: overflow)
    results[4].output = "lost"
    assert sorted(store.units.apply_results("me", results)) == sorted(u.id for u in claimed)
    units = {u.id: store.units.get_unit(u.id) for u in claimed}
    bad = units.pop(claimed[4].id)
    assert bad.status == "FAILED" and bad.output is None and bad.error_class == "permanent"
    assert bad.error.startswith("the store refused this unit's result (") and "INSERT" not in bad.error
    assert all(u.status == "COMPLETED" and u.output.startswith("ok ") and u.tokens_in == 3 for u in units.values())
    logs = store.logs.list_logs(job, min_level="error")
    assert [line.unit_id for line in logs] == [claimed[4].id]
    # fenced like any result: a second executor's late copy changes nothing
    assert store.units.apply_results("other", [UnitResult(unit_id=claimed[4].id, attempt=1, status="COMPLETED")]) == []


def test_refused_events_and_log_lines_are_kept_as_notes(store: Store) -> None:
    job = make_job(store, 1)
    unit = store.units.claim_units("me", [job], 1, 30)[0]
    store.events.append_events([
        NewEvent(job_id=job, unit_id=unit.id, attempt=1, seq=0, ts=1.0, kind="stdout", data={"text": "a\x00"}),
        NewEvent(job_id=job, unit_id=unit.id, attempt=1, seq=1, ts=1.0, kind="tool_use",
                 data={"input": {1j: "not JSON"}}),  # a worker bug: data the JSON column cannot take
        NewEvent(job_id=job, unit_id=unit.id, attempt=1, seq=2, ts=1.0, kind="end\x00", data={}),
    ])
    events = store.events.list_events(unit_id=unit.id)
    assert [e.kind for e in events] == ["stdout", "tool_use", "end\ufffd"]
    assert events[0].data["text"] in ("a\x00", "a\ufffd")
    assert events[1].data["error"].startswith("event not storable: TypeError")
    store.logs.append_logs([{"job_id": job, "level": "info", "message": "line\x00one"},
                            {"job_id": job, "level": "info", "message": "two", "extra": {"bad": {1j}}}])
    assert [line.message for line in store.logs.list_logs(job)][-2:] == ["line\ufffdone",
                                                                   "log line not storable: TypeError: "
                                                                   "Object of type set is not JSON serializable"]


def test_a_flush_with_refused_rows_is_written_again_whole_and_claims_once(store: Store) -> None:
    """An executor's flush (`write_batch`) runs without savepoints first; a refused row rolls it back
    whole and it is written again with them: every good row lands once, the claim in it happens once."""
    job = make_job(store, 8)
    claimed = store.units.claim_units("me", [job], 4, 30)
    results = [UnitResult(unit_id=u.id, attempt=1, status="COMPLETED", output="ok") for u in claimed]
    results[1].tokens_in = 10**20
    events = [NewEvent(job_id=job, unit_id=u.id, attempt=1, seq=0, ts=1.0, kind="start", data={}) for u in claimed]
    events.append(NewEvent(job_id=job, unit_id=claimed[0].id, attempt=1, seq=1, ts=1.0, kind="tool_use",
                           data={"input": {1j: "not JSON"}}))
    applied, more = store.write_batch("me", events, results, [{"job_id": job, "level": "info", "message": "flushed"}],
                                      lambda: store.units.claim_units("me", [job], 4, 30), job)
    assert sorted(applied) == sorted(u.id for u in claimed)
    assert more is not None and len(more) == 4 and not {u.id for u in more} & {u.id for u in claimed}
    statuses = {u.id: store.units.get_unit(u.id).status for u in claimed}
    assert statuses.pop(claimed[1].id) == "FAILED" and set(statuses.values()) == {"COMPLETED"}
    assert [e.kind for e in store.events.list_events(unit_id=claimed[0].id)] == ["start", "tool_use"]
    assert len(store.events.list_events(job_id=job)) == 5
    assert [line.message for line in store.logs.list_logs(job)].count("flushed") == 1
    counts = store.units.count_units(job)
    assert (counts["RUNNING"], counts["PENDING"], counts["COMPLETED"], counts["FAILED"]) == (4, 0, 3, 1)
