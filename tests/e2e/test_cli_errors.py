"""Bad input through the real `abp` CLI: one clear line, a non-zero exit, nothing written.

Each case runs the CLI in a subprocess exactly as a user would. A user-fixable error must print a
single `error: ...` line on stderr that names the problem (the line number, the field, the id), no
traceback, and leave the store as it was: no job, no units, no changed status.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp, processes_with, wait_status, wait_until

UPPER = "python3 -c 'import sys; print(sys.argv[1].upper())' {{ row.name }}"


# -- helpers -------------------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit != 0, no traceback, exactly one stderr line starting with `error:` naming every needle."""
    assert result.returncode != 0, f"expected failure, got 0: {result.stdout!r} {result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Argument-parser errors: exit 2, no traceback; may span lines (click's usage box)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"


def row_count(orch: Orchestrator, table_name: str) -> int:
    """Rows in a store table, every status included (also hidden CREATING jobs)."""
    from agentic_batch.store import schema

    table = getattr(schema, table_name)
    with orch.store.database.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def assert_nothing_written(orch: Orchestrator, cwd: Path) -> None:
    listed = abp("list", "--json", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert row_count(orch, "jobs") == 0
    assert row_count(orch, "units") == 0


def create(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return abp("create", "--name", "bad", *args, cwd=cwd)


def create_ok(cwd: Path, *args: str) -> int:
    result = abp("create", "--name", "ok", *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["job_id"])


@pytest.fixture
def names_csv(workdir: Path) -> Path:
    path = workdir / "names.csv"
    path.write_text("name,age\nann,3\nbob,4\ncat,5\n")
    return path


# -- create: sources -----------------------------------------------------------------------------


def test_glob_matching_nothing(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "a.txt").write_text("x\n")
    result = create(workdir, "--files", "*.nope", "--command", "wc -w {{ path }}")
    assert_one_line_error(result, "no files match", "*.nope")
    assert_nothing_written(orch, workdir)


def test_missing_csv_file(workdir: Path, orch: Orchestrator) -> None:
    result = create(workdir, "--csv", "missing.csv", "--command", UPPER)
    assert_one_line_error(result, "missing.csv", "does not exist")
    assert_nothing_written(orch, workdir)


def test_malformed_csv_names_the_line(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "bad.csv").write_text("name,age\nann,3\nbob,4\ncat,5,extra\ndan,6\n")
    result = create(workdir, "--csv", "bad.csv", "--command", UPPER)
    assert_one_line_error(result, "line 4", "bad.csv")
    assert_nothing_written(orch, workdir)


def test_malformed_csv_deep_in_the_file_writes_nothing(workdir: Path, orch: Orchestrator) -> None:
    """The bad row comes after the preview items: the half-inserted job must be rolled back."""
    rows = "".join(f"n{i},{i}\n" for i in range(20))
    (workdir / "late.csv").write_text("name,age\n" + rows + "bad,1,2\n")
    result = create(workdir, "--csv", "late.csv", "--command", UPPER)
    assert_one_line_error(result, "line 22")
    assert_nothing_written(orch, workdir)


def test_malformed_json_names_the_line(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "bad.json").write_text('[\n  {"name": "ann"},\n  {"name": "bob",}\n]\n')
    result = create(workdir, "--json", "bad.json", "--command", UPPER)
    assert_one_line_error(result, "line 3", "bad.json")
    assert_nothing_written(orch, workdir)


def test_malformed_jsonl_names_the_line(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "bad.jsonl").write_text('{"name": "ann"}\n{"name": "bob"}\n{"name": "cat"\n')
    result = create(workdir, "--jsonl", "bad.jsonl", "--command", UPPER)
    assert_one_line_error(result, "line 3", "bad.jsonl")
    assert_nothing_written(orch, workdir)


def test_sql_error_unknown_table(workdir: Path, orch: Orchestrator) -> None:
    db = workdir / "data.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table people (id integer, name text)")
        conn.execute("insert into people values (1, 'ann'), (2, 'bob')")
    result = create(workdir, "--sql", "select * from no_such_table", "--sql-db", f"sqlite:///{db}",
                    "--command", UPPER)
    assert_one_line_error(result, "no_such_table")
    assert_nothing_written(orch, workdir)


def test_python_source_unknown_module(workdir: Path, orch: Orchestrator) -> None:
    module = f"abp_no_such_module_{uuid.uuid4().hex[:8]}"
    result = create(workdir, "--python", f"{module}:items", "--command", UPPER)
    assert_one_line_error(result, module)
    assert_nothing_written(orch, workdir)


def test_python_source_unknown_function(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "gen_items.py").write_text("def items():\n    yield {'name': 'ann'}\n")
    result = create(workdir, "--python", "gen_items:no_such_function", "--command", UPPER)
    assert_one_line_error(result, "no_such_function")
    assert_nothing_written(orch, workdir)


# -- create: workers -----------------------------------------------------------------------------


def test_python_worker_unknown_module(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    module = f"abp_no_such_module_{uuid.uuid4().hex[:8]}"
    result = create(workdir, "--csv", names_csv.name, "--function", f"{module}:run")
    assert_one_line_error(result, module)
    assert_nothing_written(orch, workdir)


def test_python_worker_unknown_function(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    (workdir / "handlers.py").write_text("def upper(payload, prompt=None):\n"
                                         "    return payload['name'].upper()\n")
    result = create(workdir, "--csv", names_csv.name, "--function", "handlers:no_such_function")
    assert_one_line_error(result, "no_such_function")
    assert_nothing_written(orch, workdir)


def test_command_given_with_python_worker(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--worker", "python", "--command", UPPER)
    assert_one_line_error(result, "--command", "python")
    assert_nothing_written(orch, workdir)


def test_unknown_worker_kind(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--worker", "bogus", "--prompt", "{{ name }}")
    assert_one_line_error(result, "bogus")
    assert_nothing_written(orch, workdir)


# -- create: templates ---------------------------------------------------------------------------


def test_template_syntax_error_names_the_line(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--prompt", "Hello {{ name }}\n{% if %} oops",
                    "--command", "echo {{ prompt }}")
    assert_one_line_error(result, "line 2")
    assert_nothing_written(orch, workdir)


def test_command_template_syntax_error(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--command", "echo {{ name ")
    assert_one_line_error(result, "--command")
    assert_nothing_written(orch, workdir)


def test_template_field_missing(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--prompt", "Hello {{ row.nope }}",
                    "--command", "echo {{ prompt }}")
    line = assert_one_line_error(result, "row.nope")
    assert "name" in line and "age" in line  # lists the fields the item does have
    assert_nothing_written(orch, workdir)


def test_command_template_field_missing(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--command", "echo {{ row.nope }}")
    assert_one_line_error(result, "row.nope")
    assert_nothing_written(orch, workdir)


# -- create: options -----------------------------------------------------------------------------


def test_concurrency_zero(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--command", UPPER, "--concurrency", "0")
    assert_one_line_error(result, "--concurrency")
    assert_nothing_written(orch, workdir)


def test_negative_timeout(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--command", UPPER, "--timeout", "-1")
    assert_one_line_error(result, "--timeout")
    assert_nothing_written(orch, workdir)


def test_two_sources(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    (workdir / "a.txt").write_text("x\n")
    result = create(workdir, "--files", "*.txt", "--csv", names_csv.name, "--command", UPPER)
    assert_one_line_error(result, "--files", "--csv")
    assert_nothing_written(orch, workdir)


def test_no_source(workdir: Path, orch: Orchestrator) -> None:
    result = create(workdir, "--command", UPPER)
    assert_one_line_error(result, "no source")
    assert_nothing_written(orch, workdir)


def test_missing_name_is_a_usage_error(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = abp("create", "--csv", names_csv.name, "--command", UPPER, cwd=workdir)
    assert_usage_error(result, "--name")
    assert_nothing_written(orch, workdir)


def test_bad_priority_is_a_usage_error(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = create(workdir, "--csv", names_csv.name, "--command", UPPER, "--priority", "urgent")
    assert_usage_error(result, "--priority")
    assert_nothing_written(orch, workdir)


# -- unknown ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["status", "4242"], ["start", "4242"], ["show", "4242", "1"], ["results", "4242"], ["stop", "4242"],
    ["resume", "4242"], ["cancel", "4242"], ["start", "4242", "--approve"], ["wait", "4242"],
    ["logs", "4242"], ["retry", "4242"], ["edit", "4242", "--prompt", "x"],
])
def test_unknown_job_id(workdir: Path, orch: Orchestrator, command: list[str]) -> None:
    result = abp(*command, cwd=workdir)
    assert_one_line_error(result, "4242")
    assert_nothing_written(orch, workdir)


def test_unknown_unit_id(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER)
    result = abp("show", str(job_id), "4242", cwd=workdir)
    assert_one_line_error(result, "4242")


def test_results_unknown_format(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER)
    result = abp("results", str(job_id), "--format", "xml", cwd=workdir)
    assert_one_line_error(result, "xml")
    assert result.stdout == ""
    assert not list(workdir.glob("*.xml"))


# -- illegal state changes -----------------------------------------------------------------------


def _status_and_units(orch: Orchestrator, job_id: int) -> tuple[str, dict[str, int]]:
    status = orch.status(job_id)
    counts = ("pending", "running", "completed", "failed", "cancelled")
    return status.status, {k: getattr(status, k) for k in counts}


def test_approve_created_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER)
    result = abp("start", str(job_id), "--approve", cwd=workdir)
    assert_one_line_error(result, str(job_id), "CREATED")
    status, counts = _status_and_units(orch, job_id)
    assert status == "CREATED"
    assert counts == {"pending": 3, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}
    assert orch.status(job_id).executor.state == "not_started"


def test_approve_completed_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER, "--concurrency", "2")
    started = abp("start", str(job_id), "--skip-test", cwd=workdir)
    assert started.returncode == 0, started.stderr
    wait_status(orch, job_id, {"COMPLETED"})
    before = _status_and_units(orch, job_id)
    result = abp("start", str(job_id), "--approve", cwd=workdir)
    assert_one_line_error(result, str(job_id), "COMPLETED")
    assert _status_and_units(orch, job_id) == before


def test_approve_and_start_running_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    job_id = create_ok(workdir, "--csv", names_csv.name, "--concurrency", "1", "--timeout", "60",
                       "--command", f"python3 -c 'import time; time.sleep(30)' {marker}")
    started = abp("start", str(job_id), "--skip-test", cwd=workdir)
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: orch.status(job_id).running == 1, what="a running unit")
        pid = orch.status(job_id).executor.pid
        for args in (["start", str(job_id), "--approve"], ["start", str(job_id)], ["resume", str(job_id)]):
            result = abp(*args, cwd=workdir)
            if args[0] == "resume":  # RUNNING with a live executor: resume is allowed and a no-op
                assert result.returncode == 0, result.stderr
                continue
            assert_one_line_error(result, str(job_id), "RUNNING")
            status, counts = _status_and_units(orch, job_id)
            assert status == "RUNNING"
            assert counts["completed"] == 0 and counts["running"] == 1
        executors = [e for e in orch.status(job_id).executor.executors if e.state == "running"]
        assert [e.pid for e in executors] == [pid]  # still the one executor it had
    finally:
        abp("cancel", str(job_id), cwd=workdir)
        wait_until(lambda: not processes_with(marker), what="sleep processes to go")


def test_reject_created_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER)
    result = abp("start", str(job_id), "--reject", cwd=workdir)
    assert_one_line_error(result, str(job_id), "CREATED")
    assert orch.status(job_id).status == "CREATED"


def test_resume_and_stop_created_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job_id = create_ok(workdir, "--csv", names_csv.name, "--command", UPPER)
    for command in ("resume", "stop"):
        result = abp(command, str(job_id), cwd=workdir)
        assert_one_line_error(result, str(job_id), "CREATED")
    status, counts = _status_and_units(orch, job_id)
    assert status == "CREATED" and counts["pending"] == 3
