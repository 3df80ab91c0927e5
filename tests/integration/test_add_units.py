"""Items added to a job that exists, through the service with real detached executors, on both stores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentic_batch.errors import IllegalState, InvalidSpec
from agentic_batch.service.adding import file_items, inline_items, jsonl_text_items
from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status
from tests.fixtures.funcs import ref
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)


def make_job(orch, workdir: Path, func: str = "echo", n: int = 3, **kw) -> int:  # type: ignore[no-untyped-def]
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(n)))
    spec = JobSpec(name=kw.pop("name", "add"), source={"kind": "jsonl", "path": str(path), "key": "id"},
                   worker="python", worker_options={"function": ref(func)}, prompt=kw.pop("prompt", "hi {{ name }}"),
                   **kw)
    return orch.create(spec, cwd=workdir).job_id


def items(*ids: int, **extra: object) -> list[dict[str, object]]:
    return [{"id": i, "name": f"n{i}", **extra} for i in ids]


def test_added_items_dedupe_by_key_and_wait_for_start(orch, workdir: Path) -> None:
    job = make_job(orch, workdir)
    result = orch.add(job, inline_items(items(2, 3, 4, 3)))
    assert (result.added, result.duplicates, result.status, result.next, result.started) == (2, 2, "CREATED",
                                                                                             "start", False)
    again = orch.add(job, inline_items(items(3, 4)))
    assert (again.added, again.duplicates, again.next) == (0, 2, None)
    assert orch.status(job).total == 5
    numbers = [(r["unit"], r["key"]) for r in orch.results(job)]
    assert numbers == [(1, "0"), (2, "1"), (3, "2"), (4, "3"), (5, "4")]  # numbered on, in the order given


def test_a_bad_item_adds_nothing_and_names_the_item(orch, workdir: Path) -> None:
    job = make_job(orch, workdir)
    with pytest.raises(InvalidSpec, match=r"item 2\b.*'name'"):
        orch.add(job, inline_items([{"id": 10, "name": "ok"}, {"id": 11}, {"id": 12, "name": "ok"}]))
    with pytest.raises(InvalidSpec, match="item 2 is an array, not a JSON object"):
        orch.add(job, inline_items([{"id": 10, "name": "ok"}, [1, 2]]))
    with pytest.raises(InvalidSpec, match="item 1 has no field 'id' to use as the key"):
        orch.add(job, inline_items([{"name": "no key"}]))
    with pytest.raises(InvalidSpec, match="line 2 of the request body is not JSON"):
        orch.add(job, jsonl_text_items('{"id": 10, "name": "a"}\n{oops\n', "the request body"))
    with pytest.raises(InvalidSpec, match="no items to add"):
        orch.add(job, inline_items([]))
    assert orch.status(job).total == 3


def test_files_jsonl_and_json_array(orch, workdir: Path) -> None:
    job = make_job(orch, workdir)
    (workdir / "more.jsonl").write_text("\n".join(json.dumps(i) for i in items(5, 6)) + "\n\n")
    (workdir / "more.json").write_text(json.dumps(items(6, 7)))
    assert orch.add(job, file_items(str(workdir / "more.jsonl"))).added == 2
    result = orch.add(job, file_items(str(workdir / "more.json")))  # detected: it starts with "["
    assert (result.added, result.duplicates) == (1, 1)
    (workdir / "bad.jsonl").write_text('{"id": 8, "name": "x"}\n[1]\n')
    with pytest.raises(InvalidSpec, match="line 2 of .*bad.jsonl holds an array, not a JSON object"):
        orch.add(job, file_items(str(workdir / "bad.jsonl")))
    assert orch.status(job).total == 6


def test_a_running_jobs_executor_picks_new_units_up(orch, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABP_TEST_SLEEP", "0.3")
    job = make_job(orch, workdir, func="slow", n=3, concurrency=1, prompt=None)
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"RUNNING"})
    result = orch.add(job, inline_items(items(10, 11, 12)))
    assert (result.added, result.status, result.next) == (3, "RUNNING", None)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert (final.status, final.completed, final.total) == ("COMPLETED", 6, 6)


def test_adds_racing_the_end_of_a_job_are_never_left_behind(orch, workdir: Path) -> None:
    """Adds land while the executor decides the job is finished: every unit runs, and the job is
    never COMPLETED with a unit pending (it works on, or is PAUSED with the new units)."""
    job = make_job(orch, workdir, func="noop", n=1, prompt=None)
    orch.start(job, skip_test=True)
    for i in range(12):
        orch.add(job, inline_items(items(100 + i)))
        time.sleep(0.02 * (i % 4))
        status = orch.status(job)
        assert not (status.status == "COMPLETED" and status.pending), status
    status = wait_status(orch, job, {"COMPLETED", "PAUSED"})
    if status.status == "PAUSED":  # the last add came after the job had completed
        assert status.pause_reason == "new items"
        orch.resume(job)
    final = wait_status(orch, job, {"COMPLETED"})
    assert (final.completed, final.total) == (13, 13)


def test_a_completed_job_runs_new_units_only_with_start(orch, workdir: Path) -> None:
    job = make_job(orch, workdir, n=2)
    orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED"})
    waiting = orch.add(job, inline_items(items(5)))
    assert (waiting.status, waiting.next, waiting.started) == ("PAUSED", "resume", False)
    status = orch.status(job)
    assert (status.pending, status.pause_reason) == (1, "new items")
    time.sleep(0.5)
    assert orch.status(job).pending == 1  # nothing ran it
    started = orch.add(job, inline_items(items(6)), start=True)
    assert (started.added, started.started, started.status) == (1, True, "RUNNING")
    final = wait_status(orch, job, {"COMPLETED"})
    assert (final.completed, final.total) == (4, 4)
    again = orch.add(job, inline_items(items(7)), start=True)  # COMPLETED -> RUNNING at once
    assert again.started and wait_status(orch, job, {"COMPLETED"}).completed == 5


def test_refusals_change_nothing(orch, workdir: Path) -> None:
    job = make_job(orch, workdir)
    with pytest.raises(IllegalState, match="start applies to a COMPLETED, PAUSED or FAILED job; job .* is CREATED"):
        orch.add(job, inline_items(items(9)), start=True)
    orch.cancel(job)
    with pytest.raises(IllegalState, match="cannot add units to job .*: it is CANCELLED"):
        orch.add(job, inline_items(items(9)))
    assert orch.status(job).total == 3


def test_a_files_job_keys_added_items_by_relative_path(orch, workdir: Path) -> None:
    (workdir / "a.txt").write_text("a")
    spec = JobSpec(name="files", source={"kind": "files", "glob": "*.txt"}, worker="command",
                   worker_options={"command": "cat {{ path }}"})
    job = orch.create(spec, cwd=workdir).job_id
    with pytest.raises(InvalidSpec, match="item 1 has no field 'relative_path'"):
        orch.add(job, inline_items([{"path": str(workdir / "b.txt")}]))
    result = orch.add(job, inline_items([{"path": str(workdir / "b.txt"), "relative_path": "b.txt"},
                                         {"path": str(workdir / "a.txt"), "relative_path": "a.txt"}]))
    assert (result.added, result.duplicates) == (1, 1)


def test_a_command_jobs_argv_is_checked_for_every_item(orch, workdir: Path) -> None:
    (workdir / "c.jsonl").write_text('{"id": 1, "name": "a"}\n')
    spec = JobSpec(name="argv", source={"kind": "jsonl", "path": str(workdir / "c.jsonl"), "key": "id"},
                   worker="command", worker_options={"command": "echo {{ name }}"})
    job = orch.create(spec, cwd=workdir).job_id
    given = [{"id": i, "name": f"n{i}"} for i in range(2, 40)] + [{"id": 40}] + [{"id": 41, "name": "x"}]
    with pytest.raises(InvalidSpec, match=r"--command uses 'name' but the item has no field 'name' .*\(item 39, "):
        orch.add(job, inline_items(given))
    assert orch.status(job).total == 1
