"""One poison unit fails on its own; its batch-mates and the executor carry on (real detached
executors, real agent processes, on SQLite and PostgreSQL).

Poisons: NUL bytes in an agent's output and in item fields, a result row the store refuses, a
worker function that calls sys.exit(), an answer that breaks schema validation, an output_schema
whose $ref does not resolve, and output larger than the job's max_output_bytes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from agentic_batch.config import load_settings
from agentic_batch.engine.launch import executor_log_path
from agentic_batch.service.models import JobView
from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status, wait_until
from tests.fixtures.poison_funcs import ref
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)


def jsonl(workdir: Path, rows: list[dict[str, Any]], name: str = "items.jsonl") -> str:
    path = workdir / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def python_job(orch, workdir: Path, func: str, n: int = 4, **kw: Any) -> int:  # type: ignore[no-untyped-def]
    rows = [{"id": i, "name": f"n{i}"} for i in range(n)]
    spec = JobSpec(name="poison", source={"kind": "jsonl", "path": jsonl(workdir, rows), "key": "id"},
                   worker="python", worker_options={"function": ref(func)}, concurrency=n, **kw)
    return orch.create(spec, cwd=workdir).job_id


def run_to_end(orch, job: int, timeout: float = 90) -> JobView:  # type: ignore[no-untyped-def]
    """Start without a test; the job must reach a final status (a dead executor leaves it RUNNING)."""
    orch.start(job, skip_test=True)
    final = wait_status(orch, job, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"}, timeout=timeout)
    assert final.running == 0 and final.pending == 0, final
    # the executor exits on its own at the end (a crashed one would have left units RUNNING)
    wait_until(lambda: orch.status(job).executor.state == "stopped", timeout=30, what="the executor to exit")
    return final


def by_key(orch, job: int) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    return {row["key"]: row for row in orch.results(job)}


def unit_events(orch, job: int, key: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    unit = orch.store.browse.unit_by_key(job, key)
    return [{"kind": e.kind, **e.data} for e in orch.store.events.list_events(unit_id=unit.id)]


def test_a_result_the_store_refuses_fails_only_its_unit(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "huge_token_count", n=6)
    final = run_to_end(orch, job)
    assert final.status == "FAILED" and final.completed == 5 and final.failed == 1
    rows = by_key(orch, job)
    bad = rows["1"]
    assert bad["status"] == "FAILED" and "the store refused this unit's result" in bad["error"]
    assert "INSERT" not in bad["error"] and "UPDATE" not in bad["error"]  # no SQL, no parameters
    assert all(rows[k]["status"] == "COMPLETED" and rows[k]["output"] == f"done {k}" for k in "02345")
    assert any("store refused" in line.message for line in orch.logs(job, level="error"))


def test_nul_bytes_in_an_agents_output_are_replaced_and_said(orch, workdir: Path) -> None:
    # a real command printing NUL bytes, next to a python-free batch-mate
    spec = JobSpec(name="nul", source={"kind": "jsonl", "path": jsonl(workdir, [{"id": 0}, {"id": 1}]), "key": "id"},
                   worker="command", concurrency=2,
                   worker_options={"command": f"{sys.executable} -c \"import sys; sys.stdout.write('a' + chr(0) + "
                                              f"'b' + sys.argv[1])\" {{{{ row.id }}}}"})
    job = orch.create(spec, cwd=workdir).job_id
    final = run_to_end(orch, job)
    assert final.status == "COMPLETED", final
    rows = by_key(orch, job)
    assert rows["0"]["output"] == "a\ufffdb0" and rows["1"]["output"] == "a\ufffdb1"
    notes = [e for e in unit_events(orch, job, "1") if e["kind"] == "note"]
    assert notes and "NUL" in notes[0]["text"] and "U+FFFD" in notes[0]["text"]


def test_nul_bytes_in_error_text_are_replaced(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "nul_text", n=2)
    final = run_to_end(orch, job)
    assert final.status == "COMPLETED"
    assert by_key(orch, job)["1"]["output"] == "before\ufffdafter 1"


def test_nul_bytes_in_csv_fields_reach_prompt_and_key_storably(orch, workdir: Path) -> None:
    path = workdir / "items.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows([["a\x00", "ann"], ["b", "bo\x00b"], ["c", "cat"]])
    spec = JobSpec(name="nul-items", source={"kind": "csv", "path": str(path), "key": "id"}, worker="python",
                   worker_options={"function": ref("echo_prompt")}, prompt="hello {{ name }}", concurrency=3)
    job = orch.create(spec, cwd=workdir).job_id
    assert any("U+FFFD" in line.message and "2 item(s)" in line.message
               for line in orch.logs(job, level="warning"))
    final = run_to_end(orch, job)
    assert final.status == "COMPLETED" and final.completed == 3
    rows = by_key(orch, job)
    assert set(rows) == {"a\ufffd", "b", "c"}
    assert rows["b"]["output"] == "hello bo\ufffdb" and rows["b"]["name"] == "bo\ufffdb"
    assert orch.store.browse.unit_by_key(job, "b").prompt == "hello bo\ufffdb"


def test_a_function_calling_sys_exit_fails_its_unit_not_the_executor(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "exits", n=4)
    final = run_to_end(orch, job)
    assert final.status == "FAILED" and final.completed == 3 and final.failed == 1
    bad = by_key(orch, job)["1"]
    assert bad["status"] == "FAILED" and "SystemExit" in bad["error"] and bad["attempts"] == 1  # permanent
    log_text = executor_log_path(load_settings(), job).read_text()
    assert f"unit {bad['unit']} attempt 1: the python worker raised SystemExit: 3" in log_text
    assert "Traceback" in log_text and "sys.exit(3)" in log_text


def test_an_exception_inside_schema_validation_fails_only_its_unit(orch, workdir: Path) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    job = python_job(orch, workdir, "deep_json", n=3, output_schema=schema)
    final = run_to_end(orch, job)
    assert final.status == "FAILED" and final.completed == 2 and final.failed == 1
    rows = by_key(orch, job)
    assert rows["0"]["data.label"] == "fine"
    bad = rows["1"]
    assert "RecursionError" in bad["error"] and "output_schema" in bad["error"] and bad["attempts"] == 1
    errors = [e for e in unit_events(orch, job, "1") if e["kind"] == "error"]
    assert errors and "RecursionError" in errors[-1]["traceback"]


def test_output_beyond_max_output_bytes_keeps_head_and_tail_and_the_whole_text_in_a_file(orch, workdir: Path) -> None:
    job = python_job(orch, workdir, "long_text", n=2, max_output_bytes=2048)
    final = run_to_end(orch, job)
    assert final.status == "COMPLETED"
    row = by_key(orch, job)["1"]
    output = row["output"]
    assert len(output.encode()) <= 2048
    assert output.startswith("HEADxxx") and output.endswith("xxxTAIL")
    assert "bytes cut; full output in " in output
    spilled = Path(output.split("full output in ", 1)[1].split("]", 1)[0])
    assert spilled.read_text() == "HEAD" + "x" * 20_000 + "TAIL"
    assert spilled.parent.name == "outputs" and spilled.parent.parent.name == str(job)
    notes = [e for e in unit_events(orch, job, "1") if e["kind"] == "note"]
    assert notes and "max_output_bytes" in notes[0]["text"]


def test_a_stored_schema_that_cannot_validate_fails_units_not_the_executor(orch, workdir: Path) -> None:
    """A job made before $refs were checked at create (so every resume died): its units fail, each
    on its own, with an error naming output_schema; the executor finishes the job."""
    job = python_job(orch, workdir, "fine_json", n=3, output_schema={"type": "object"})
    orch.store.jobs.update_job(job, output_schema={"$ref": "#/$defs/missing"})
    final = run_to_end(orch, job)
    assert final.status == "FAILED" and final.failed == 3
    for row in by_key(orch, job).values():
        assert "output_schema" in row["error"] and "/$defs/missing" in row["error"] and row["attempts"] == 1
