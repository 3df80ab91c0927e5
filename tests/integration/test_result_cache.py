"""The result cache (`--cache`) through the service layer, with real detached executors, on SQLite and
PostgreSQL: an identical re-run costs nothing, an edited prompt re-runs only the changed units, a
changed file is asked again, and jobs without `--cache` never take a cached answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import IllegalState, InvalidSpec
from agentic_batch.spec import JobSpec
from agentic_batch.testing.openai_server import ScriptedOpenAIServer
from tests.fixtures.abp import wait_status
from tests.fixtures.funcs import ref
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)

ROWS = [{"id": i, "name": f"n{i}"} for i in range(6)]


def jsonl(workdir: Path, rows: list[dict[str, Any]], name: str = "items.jsonl") -> str:
    path = workdir / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def ran(runlog: Path) -> list[Any]:
    """The item ids the python worker was called for, in order (ABP_TEST_RUNLOG)."""
    if not runlog.exists():
        return []
    return [json.loads(line)["key"] for line in runlog.read_text().splitlines()]


@pytest.fixture
def runlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runlog.jsonl"
    monkeypatch.setenv("ABP_TEST_RUNLOG", str(path))
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedOpenAIServer]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with ScriptedOpenAIServer() as scripted:
        yield scripted


def python_job(orch: Any, workdir: Path, prompt: str, *, cache: bool = True, name: str = "cached") -> int:
    spec = JobSpec(name=name, source={"kind": "jsonl", "path": jsonl(workdir, ROWS), "key": "id"},
                   worker="python", worker_options={"function": ref("echo")}, prompt=prompt, cache=cache)
    return orch.create(spec, cwd=workdir).job_id


def run_to_end(orch: Any, job: int) -> Any:
    started = orch.start(job, skip_test=True)
    wait_status(orch, job, {"COMPLETED", "FAILED"})
    return started


def test_an_identical_rerun_is_all_cached_at_no_cost(orch: Any, workdir: Path, server: ScriptedOpenAIServer) -> None:
    def openai_job() -> int:
        spec = JobSpec(name="summaries", source={"kind": "jsonl", "path": jsonl(workdir, ROWS), "key": "id"},
                       worker="openai", worker_options={"model": "gpt-4o-mini", "base_url": server.url},
                       prompt="Summarise {{ row.name }}", cache=True)
        return orch.create(spec, cwd=workdir).job_id

    first = openai_job()
    plan = run_to_end(orch, first).plan
    assert (plan.cached, plan.to_run) == (0, 6)
    paid = orch.status(first)
    assert paid.status == "COMPLETED" and paid.cost_usd > 0 and paid.cached == 0
    asked = server.request_count

    second = openai_job()
    started = run_to_end(orch, second)
    assert (started.plan.cached, started.plan.to_run, started.plan.projected_cost_usd) == (6, 0, 0.0)
    again = orch.status(second)
    assert again.status == "COMPLETED" and again.completed == 6 and again.cached == 6
    assert (again.cost_usd, again.tokens_in, again.tokens_out) == (0.0, 0, 0)
    assert server.request_count == asked  # no model call at all
    for number in range(1, 7):
        unit, source = orch.unit_view(second, number), orch.unit_view(first, number)
        assert unit.output == source.output and unit.output.startswith("echo: Summarise n")
        assert unit.cached_from is not None and (unit.cached_from.job_id, unit.cached_from.unit) == (first, number)
        assert unit.cost_usd == 0 and unit.attempts == 0 and unit.prompt == source.prompt
    rows = orch.results(second)
    assert [r["cached_from"] for r in rows] == [f"{first}/{n}" for n in range(1, 7)]
    assert all(r["cached_from"] is None for r in orch.results(first))
    csv_text = "".join(orch.export(second, "csv"))
    assert "cached_from" in csv_text.splitlines()[0] and f"{first}/3" in csv_text


def test_a_new_job_with_an_edited_prompt_runs_only_the_changed_units(orch: Any, workdir: Path,
                                                                    runlog: Path) -> None:
    first = python_job(orch, workdir, "hello {{ row.name }}")
    run_to_end(orch, first)
    assert set(ran(runlog)) == {0, 1, 2, 3, 4, 5}  # sets: a unit may run more than once (at-least-once)
    runlog.unlink()
    # The edit changes the rendered prompt of one item only.
    second = python_job(orch, workdir, "hello {{ row.name }}{% if row.id == 3 %} again{% endif %}")
    plan = run_to_end(orch, second).plan
    assert (plan.cached, plan.to_run) == (5, 1)
    assert set(ran(runlog)) == {3}
    assert orch.unit_view(second, 4).output == "3:hello n3 again"
    assert orch.unit_view(second, 4).cached_from is None
    assert orch.unit_view(second, 1).cached_from is not None


def test_edit_and_retry_reruns_only_the_units_whose_prompt_changed(orch: Any, workdir: Path, runlog: Path) -> None:
    job = python_job(orch, workdir, "hello {{ row.name }}")
    run_to_end(orch, job)
    runlog.unlink()
    orch.edit_prompt(job, "hello {{ row.name }}{% if row.id in (1, 4) %} again{% endif %}")
    retried = orch.retry(job)
    assert retried.retried == 2 and (retried.plan.cached, retried.plan.unchanged, retried.plan.to_run) == (0, 4, 2)
    final = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert final.status == "COMPLETED" and final.completed == 6
    assert set(ran(runlog)) == {1, 4}
    assert orch.unit_view(job, 2).output == "1:hello n1 again"
    assert orch.unit_view(job, 3).output == "2:hello n2"
    # Nothing changed since: a retry has nothing to do and says so.
    with pytest.raises(IllegalState, match="no failed units"):
        orch.retry(job)


def test_jobs_without_cache_never_take_a_cached_answer(orch: Any, workdir: Path, runlog: Path) -> None:
    """Off by default for every worker (a command or an agent acts on the world); allowed when asked."""
    def command_job(cache: bool) -> int:
        spec = JobSpec(name="cmd", source={"kind": "jsonl", "path": jsonl(workdir, ROWS), "key": "id"},
                       worker="command", worker_options={"command": "echo item {{ row.id }}"}, **(
                           {"cache": True} if cache else {}))
        return orch.create(spec, cwd=workdir).job_id

    assert all(JobSpec(name="x", source={"kind": "jsonl", "path": "x.jsonl"}, worker=kind).cache is False
               for kind in ("claude", "command", "python", "openai", "anthropic"))
    seeded = command_job(cache=True)
    assert run_to_end(orch, seeded).plan.to_run == 6
    plain = command_job(cache=False)
    started = run_to_end(orch, plain)
    assert started.cache is False and started.plan.cached == 0
    status = orch.status(plain)
    assert status.completed == 6 and status.cached == 0
    assert all(orch.unit_view(plain, n).cached_from is None and orch.unit_view(plain, n).attempts == 1
               for n in range(1, 7))
    asked = command_job(cache=True)
    assert run_to_end(orch, asked).plan.cached == 6
    copied = orch.unit_view(asked, 2)
    assert copied.output == "item 1" and copied.cached_from.job_id == seeded
    assert (copied.exit_code, copied.stdout) == (0, "item 1\n")  # the command's answer travels whole


def test_a_file_whose_content_changed_is_not_served_from_cache(orch: Any, workdir: Path) -> None:
    docs = workdir / "docs"
    docs.mkdir()
    for name in ("a", "b", "c"):
        (docs / f"{name}.txt").write_text(f"text of {name}\n")

    def files_job() -> int:
        spec = JobSpec(name="files", source={"kind": "files", "root": str(docs), "glob": "*.txt"},
                       worker="command", worker_options={"command": "cat {{ path }}"}, cache=True)
        return orch.create(spec, cwd=workdir).job_id

    first = files_job()
    run_to_end(orch, first)
    (docs / "b.txt").write_text("new text of b\n")  # same path, same size class, new content
    second = files_job()
    plan = run_to_end(orch, second).plan
    assert (plan.cached, plan.to_run) == (2, 1)
    outputs = {orch.unit_view(second, n).key: orch.unit_view(second, n) for n in (1, 2, 3)}
    changed = next(u for key, u in outputs.items() if "b.txt" in key)
    assert changed.cached_from is None and "new text of b" in (changed.output or "")
    assert sum(u.cached_from is not None for u in outputs.values()) == 2


def test_cache_with_isolation_is_refused_in_one_line(orch: Any, workdir: Path) -> None:
    with pytest.raises(InvalidSpec, match="cache does not apply to isolate worktree"):
        orch.create({"name": "iso", "source": {"kind": "jsonl", "path": jsonl(workdir, ROWS)},
                     "worker": "command", "worker_options": {"command": "true"}, "cache": True,
                     "isolate": "worktree"}, cwd=workdir)
    assert orch.list_jobs() == []


def test_fingerprints_follow_the_prompt_the_units_will_run_with(orch: Any, workdir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit forgets the fingerprints of the units that have not completed (they will be asked something
    else), and the next run computes them from the new prompt: a unit never completes under a fingerprint
    of a prompt it was not given, which would poison the cache for later jobs."""
    from agentic_batch.service.fingerprints import JobFingerprint

    flag = tmp_path / "flag"
    monkeypatch.setenv("ABP_TEST_FLAG", str(flag))
    spec = JobSpec(name="flaky", source={"kind": "jsonl", "path": jsonl(workdir, ROWS), "key": "id"},
                   worker="python", worker_options={"function": ref("flaky")}, prompt="v1 {{ row.name }}",
                   cache=True, max_retries=0)
    job = orch.create(spec, cwd=workdir).job_id
    run_to_end(orch, job)
    assert orch.status(job).status == "FAILED"
    units = list(orch.store.units.iter_units(job))
    assert all(u.fingerprint for u in units)
    orch.edit_prompt(job, "v2 {{ row.name }}")
    assert all(u.fingerprint is None for u in orch.store.units.iter_units(job))
    flag.write_text("")
    orch.retry(job)
    assert wait_status(orch, job, {"COMPLETED", "FAILED"}).status == "COMPLETED"
    fingerprint = JobFingerprint(orch.store.jobs.get_job(job))
    assert all(u.fingerprint == fingerprint.unit(u)[0] for u in orch.store.units.iter_units(job))
    with pytest.raises(InvalidSpec):  # still a template check first
        orch.edit_prompt(job, "{{ row.nope }}")
