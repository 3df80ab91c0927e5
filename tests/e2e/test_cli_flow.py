"""Happy paths through the real `abp` CLI: create, test first, approve, watch the store, export.

Every command runs as a subprocess with the test's ABP_HOME; executors are the real detached ones.
Workers are `command` workers (no shell) over tiny sources, so each test takes a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import ABP, abp, processes_with, wait_status, wait_until

UPPER = "python3 -c 'import sys; print(sys.argv[1].upper())' {{ row.name }}"
ECHO_PROMPT = "python3 -c 'import sys; print(sys.argv[1])' {{ prompt }}"
STATUS_KEYS = {"status", "total", "pending", "running", "completed", "failed", "cancelled", "progress",
               "rate", "eta_seconds", "cost_usd", "executor"}


# -- helpers -------------------------------------------------------------------------------------


def ok(*args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = abp(*args, cwd=cwd, **kw)
    assert result.returncode == 0, f"abp {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def ok_json(*args: str, cwd: Path) -> Any:
    return json.loads(ok(*args, "--json", cwd=cwd).stdout)


def create(cwd: Path, *args: str, name: str = "job") -> int:
    result = ok("create", "--name", name, *args, cwd=cwd)
    return int(result.stdout.strip())


def results(job_id: int, cwd: Path) -> list[dict[str, Any]]:
    return json.loads(ok("results", str(job_id), "--format", "json", cwd=cwd).stdout)


def finish(orch: Orchestrator, job_id: int) -> list[dict[str, Any]]:
    """Wait in-process (cheaper than a CLI call) for COMPLETED; return the result rows."""
    wait_status(orch, job_id, {"COMPLETED", "FAILED", "CANCELLED", "PAUSED"})
    assert orch.status(job_id).status == "COMPLETED", orch.results(job_id)
    return orch.results(job_id)


def executor_exits(orch: Orchestrator, job_id: int) -> None:
    wait_until(lambda: orch.status(job_id).executor.state == "stopped", timeout=20,
               what="executor exit")


def wait_ok(job_id: int, cwd: Path) -> None:
    result = abp("wait", str(job_id), "--timeout", "60", cwd=cwd)
    assert result.returncode == 0, (result.stdout, result.stderr)


@pytest.fixture
def names_csv(workdir: Path) -> Path:
    path = workdir / "names.csv"
    path.write_text("name,age\nann,3\nbob,4\ncat,5\n")
    return path


# -- create output -------------------------------------------------------------------------------


def test_create_prints_only_the_job_id(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = ok("create", "--name", "ids", "--csv", "names.csv", "--command", UPPER, cwd=workdir)
    assert result.stdout.strip().isdigit() and result.stdout == result.stdout.strip() + "\n"
    job_id = int(result.stdout)
    assert "Created job" in result.stderr and "3 unit(s)" in result.stderr

    # the shell idiom from the README works as written
    abp_cmd = " ".join(shlex.quote(a) for a in ABP)
    script = (f"JOB=$({abp_cmd} create --name shell --csv names.csv --command {shlex.quote(UPPER)} "
              f"2>/dev/null) && {abp_cmd} status \"$JOB\" --json")
    shell = subprocess.run(["bash", "-c", script], check=False, cwd=workdir, capture_output=True, text=True,
                           timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert json.loads(shell.stdout)["id"] == job_id + 1

    created = ok_json("create", "--name", "as-json", "--csv", "names.csv", "--command", UPPER, cwd=workdir)
    assert created["job_id"] == job_id + 2 and created["units"] == 3
    assert [j.name for j in orch.list_jobs()] == ["as-json", "shell", "ids"]


def test_json_source_with_trailing_json_flag(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "people.json").write_text(json.dumps([{"name": "ann"}, {"name": "bob"}]))
    plain = ok("create", "--name", "plain", "--json", "people.json", "--command", UPPER, cwd=workdir)
    assert plain.stdout.strip().isdigit()
    both = ok("create", "--name", "both", "--json", "people.json", "--command", UPPER, "--json", cwd=workdir)
    created = json.loads(both.stdout)
    assert created["job_id"] == int(plain.stdout) + 1 and created["units"] == 2
    # a bare --json right after another flag, with the source after it, also means JSON output
    mid = ok("create", "--name", "mid", "--json", "--json", "people.json", "--command", UPPER, cwd=workdir)
    assert json.loads(mid.stdout)["units"] == 2


# -- test first, reject, edit, approve -----------------------------------------------------------


def test_test_first_reject_edit_approve(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job = str(create(workdir, "--csv", "names.csv", "--prompt", "Hello {{ row.name }}",
                     "--command", ECHO_PROMPT, "--concurrency", "2"))

    tested = ok("start", job, cwd=workdir)
    assert "Hello ann" in tested.stdout  # the test unit's prompt and output
    assert "COMPLETED" in tested.stdout
    assert f"abp start {job} --approve" in tested.stderr
    status = ok_json("status", job, cwd=workdir)
    assert status["status"] == "TESTING"
    assert (status["completed"], status["pending"]) == (1, 2)
    assert status["executor"]["state"] == "not_started"
    test_unit = status["test_unit"]

    again = ok("start", job, cwd=workdir)  # a TESTING job: shows the waiting result, runs nothing
    assert "Hello ann" in again.stdout
    assert orch.unit(job, test_unit).attempts == 1

    ok("start", job, "--reject", cwd=workdir)
    assert orch.status(job).status == "CREATED"
    unit = orch.unit(job, test_unit)
    assert unit.status == "PENDING" and unit.output is None

    ok("edit", job, "--prompt", "Bye {{ row.name }}", cwd=workdir)
    retested = ok("start", job, cwd=workdir)
    assert "Bye ann" in retested.stdout  # (the conversation still lists attempt 1, which said "Hello ann")
    unit = orch.unit(job, test_unit)
    assert (unit.prompt, unit.output, unit.attempts) == ("Bye ann", "Bye ann", 2)
    assert orch.status(job).status == "TESTING"

    approved = ok("start", job, "--approve", cwd=workdir)
    assert "approved" in approved.stdout
    wait_ok(int(job), workdir)
    rows = orch.results(job)
    assert [r["output"] for r in rows] == ["Bye ann", "Bye bob", "Bye cat"]
    assert {r["status"] for r in rows} == {"COMPLETED"}


# -- a completed job, every view -----------------------------------------------------------------


def test_completed_job_views(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job = str(create(workdir, "--csv", "names.csv", "--prompt", "Shout {{ row.name }}", "--command", UPPER,
                     "--concurrency", "2", name="views"))
    ok("start", job, "--skip-test", cwd=workdir)
    wait_ok(int(job), workdir)
    executor_exits(orch, int(job))

    status = ok_json("status", job, cwd=workdir)
    assert set(status) >= STATUS_KEYS
    assert {"state", "pid"} <= set(status["executor"])
    assert status["status"] == "COMPLETED"
    assert (status["total"], status["pending"], status["running"], status["completed"], status["failed"],
            status["cancelled"]) == (3, 0, 0, 3, 0, 0)
    assert status["progress"] == 100
    assert isinstance(status["rate"], (int, float)) and status["rate"] >= 0
    assert status["eta_seconds"] in (None, 0)
    assert status["cost_usd"] == 0
    assert status["executor"]["state"] == "stopped" and isinstance(status["executor"]["pid"], int)

    by_name = ok_json("status", "views", cwd=workdir)
    assert by_name["id"] == int(job)
    listed = ok_json("list", cwd=workdir)
    assert [(j["id"], j["status"], j["completed"]) for j in listed] == [(int(job), "COMPLETED", 3)]
    assert [j["id"] for j in ok_json("list", "--status", "completed", cwd=workdir)] == [int(job)]
    assert ok_json("list", "--status", "failed,running", cwd=workdir) == []

    as_json = results(int(job), workdir)
    jsonl = ok("results", job, "--format", "jsonl", cwd=workdir).stdout
    as_jsonl = [json.loads(line) for line in jsonl.splitlines()]
    assert as_json == as_jsonl
    assert [(r["name"], r["age"], r["status"], r["output"], r["attempts"]) for r in as_json] == [
        ("ann", "3", "COMPLETED", "ANN", 1), ("bob", "4", "COMPLETED", "BOB", 1),
        ("cat", "5", "COMPLETED", "CAT", 1)]
    text = ok("results", job, "--format", "csv", cwd=workdir).stdout
    reader = csv.DictReader(io.StringIO(text))
    columns = {"unit", "name", "age", "status", "output", "error", "cost_usd", "attempts"}
    assert columns <= set(reader.fieldnames or [])
    rows = list(reader)
    assert [(r["name"], r["output"], r["status"], r["error"], r["attempts"]) for r in rows] == [
        ("ann", "ANN", "COMPLETED", "", "1"), ("bob", "BOB", "COMPLETED", "", "1"),
        ("cat", "CAT", "COMPLETED", "", "1")]
    assert [int(r["unit"]) for r in rows] == [r["unit"] for r in as_json] == [1, 2, 3]

    written = ok("results", job, "--format", "csv", "-o", "out.csv", cwd=workdir)
    assert written.stdout == "" and "3 row(s)" in written.stderr
    assert (workdir / "out.csv").read_text() == text

    unit_id = str(as_json[1]["unit"])
    shown = ok("show", job, unit_id, cwd=workdir).stdout
    for part in ("payload", "prompt", "conversation", "output", "Shout bob", "BOB", '"age": "4"'):
        assert part in shown, part
    unit = ok_json("show", job, unit_id, cwd=workdir)
    assert unit["payload"] == {"name": "bob", "age": "4"} and unit["prompt"] == "Shout bob"
    assert unit["output"] == "BOB" and unit["status"] == "COMPLETED"
    kinds = [e["kind"] for e in unit["events"]]
    assert kinds[0] == "start" and "command" in kinds and "stdout" in kinds

    logs = ok("logs", job, cwd=workdir).stdout
    assert "executor started" in logs and "job completed" in logs
    assert logs.index("executor started") < logs.index("job completed")


# -- final states and wait exit codes ------------------------------------------------------------


def test_wait_exits_1_for_a_failed_job(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    job = str(create(workdir, "--csv", "names.csv", "--max-retries", "0",
                     "--command", "python3 -c 'import sys; sys.stderr.write(\"boom\\n\"); sys.exit(3)'"))
    started = ok("start", job, cwd=workdir, env={"ABP_SKIP_TEST": "1"})
    assert "without a test" in started.stdout
    waited = abp("wait", job, "--timeout", "60", cwd=workdir)
    assert waited.returncode == 1, (waited.stdout, waited.stderr)
    status = ok_json("status", job, cwd=workdir)
    assert status["status"] == "FAILED" and status["failed"] == 3 and status["test_unit"] is None
    rows = orch.results(job)
    assert {r["status"] for r in rows} == {"FAILED"}
    assert all("exit code 3" in r["error"] and "boom" in r["error"] for r in rows)


def test_wait_timeout_then_cancel_kills_the_agents(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "four.csv").write_text("name\na\nb\nc\nd\n")
    marker = f"MARKER-{uuid.uuid4().hex}"
    job = str(create(workdir, "--csv", "four.csv", "--concurrency", "2", "--timeout", "60",
                     "--command", f"python3 -c 'import time; time.sleep(30)' {marker}"))
    ok("start", job, "--skip-test", cwd=workdir)
    wait_until(lambda: len(processes_with(marker)) == 2, what="two sleeping agents")

    waited = abp("wait", job, "--timeout", "1", cwd=workdir)
    assert waited.returncode == 2, (waited.stdout, waited.stderr)
    assert "timed out" in waited.stderr
    running = ok_json("status", job, cwd=workdir)
    assert (running["status"], running["running"], running["pending"]) == ("RUNNING", 2, 2)

    cancelled = ok("cancel", job, cwd=workdir)
    assert "cancelled" in cancelled.stdout
    status = ok_json("status", job, cwd=workdir)
    counts = (status["status"], status["cancelled"], status["pending"], status["running"])
    assert counts == ("CANCELLED", 4, 0, 0)
    assert {r["status"] for r in orch.results(job)} == {"CANCELLED"}
    wait_until(lambda: not processes_with(marker), timeout=15, what="agents killed")
    executor_exits(orch, int(job))
    assert abp("wait", job, "--timeout", "5", cwd=workdir).returncode == 1
    assert orch.status(int(job)).status == "CANCELLED"  # the executor did not overwrite it on its way out


def test_skip_test_by_flag_and_by_environment(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    by_flag = create(workdir, "--csv", "names.csv", "--command", UPPER, name="flag")
    by_env = create(workdir, "--csv", "names.csv", "--command", UPPER, name="env")
    for job_id, extra, env in ((by_flag, ["--skip-test"], None), (by_env, [], {"ABP_SKIP_TEST": "1"})):
        started = ok("start", str(job_id), *extra, cwd=workdir, env=env)
        assert "without a test" in started.stdout and "Testing" not in started.stderr
    for job_id in (by_flag, by_env):
        finish(orch, job_id)
        status = orch.status(job_id)
        assert status.test_unit is None and status.completed == 3
        assert [r["output"] for r in orch.results(job_id)] == ["ANN", "BOB", "CAT"]


# -- abp run -------------------------------------------------------------------------------------


def test_run_yes_wait_end_to_end(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    result = abp("run", "--name", "oneshot", "--csv", "names.csv", "--command", UPPER, "--concurrency", "2",
                 "--yes", "--wait", cwd=workdir, input="")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [job] = orch.list_jobs()
    assert result.stdout == ""  # `abp run ... --wait && abp results last -f csv > out.csv` writes only the CSV
    assert f"Job {job.id} started" in result.stderr and f"job {job.id} COMPLETED: 3/3 done" in result.stderr
    assert job.status == "COMPLETED" and job.completed == job.total == 3
    rows = orch.results(job.id)
    assert [(r["status"], r["output"]) for r in rows] == [("COMPLETED", "ANN"), ("COMPLETED", "BOB"),
                                                          ("COMPLETED", "CAT")]


def test_run_without_yes_and_no_tty_waits_for_approval(workdir: Path, orch: Orchestrator,
                                                        names_csv: Path) -> None:
    result = abp("run", "--name", "careful", "--csv", "names.csv", "--command", UPPER, cwd=workdir, input="")
    assert result.returncode == 0, result.stderr
    assert "ANN" in result.stderr  # the test unit ran and was shown
    [job] = orch.list_jobs()
    assert result.stdout.strip() == str(job.id)  # stdout carries only the job id
    assert "--approve" in result.stderr and str(job.id) in result.stderr
    status = orch.status(job.id)
    assert status.status == "TESTING" and status.completed == 1 and status.pending == 2
    assert status.executor.state == "not_started"


# -- retry ---------------------------------------------------------------------------------------


def test_retry_failed_after_fixing_the_cause(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    flag = workdir / "fixed.flag"
    script = "import os, sys; os.path.exists(sys.argv[1]) or sys.exit(3); print(sys.argv[2].upper())"
    command = f"python3 -c '{script}' {flag} {{{{ row.name }}}}"
    job = str(create(workdir, "--csv", "names.csv", "--max-retries", "0", "--command", command))
    ok("start", job, "--skip-test", cwd=workdir)
    assert abp("wait", job, "--timeout", "60", cwd=workdir).returncode == 1
    assert orch.status(int(job)).failed == 3

    flag.write_text("ok\n")
    retried = ok("retry", job, "--failed", cwd=workdir)
    assert "RUNNING again" in retried.stdout
    wait_ok(int(job), workdir)
    rows = orch.results(job)
    assert [(r["status"], r["output"], r["error"]) for r in rows] == [
        ("COMPLETED", "ANN", None), ("COMPLETED", "BOB", None), ("COMPLETED", "CAT", None)]
    assert all(r["attempts"] == 2 for r in rows)  # the failed attempt is kept in the count


# -- sources -------------------------------------------------------------------------------------


def test_csv_source_with_delimiter(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "semi.csv").write_text('name;note\nann;"has, comma"\nbob;"a;b"\n')
    job = create(workdir, "--csv", "semi.csv", "--delimiter", ";", "--command", "echo {{ row.note }}")
    rows = orch.results(job)
    assert [(r["name"], r["note"], r["status"]) for r in rows] == [("ann", "has, comma", "PENDING"),
                                                                   ("bob", "a;b", "PENDING")]


def test_json_source_with_json_path(workdir: Path, orch: Orchestrator) -> None:
    doc = {"meta": {"count": 3}, "data": {"items": [{"name": "ann", "n": 1}, {"name": "bob", "n": 2},
                                                    {"name": "cat", "n": 3}]}}
    (workdir / "nested.json").write_text(json.dumps(doc, indent=2))
    created = ok_json("create", "--name", "nested", "--json", "nested.json", "--json-path", "data.items",
                      "--command", UPPER, cwd=workdir)
    assert created["units"] == 3
    rows = orch.results(created["job_id"])
    assert [(r["name"], r["n"], r["status"]) for r in rows] == [("ann", 1, "PENDING"), ("bob", 2, "PENDING"),
                                                                ("cat", 3, "PENDING")]


def test_jsonl_source(workdir: Path, orch: Orchestrator) -> None:
    lines = ['{"name": "ann"}', "", '{"name": "bob", "tags": ["x"]}', '{"name": "cat"}']
    (workdir / "people.jsonl").write_text("\n".join(lines) + "\n")
    job = create(workdir, "--jsonl", "people.jsonl", "--command", UPPER)
    rows = orch.results(job)
    assert [r["name"] for r in rows] == ["ann", "bob", "cat"]  # the blank line is no item
    assert rows[1]["tags"] == ["x"]


def test_sql_source_on_sqlite(workdir: Path, orch: Orchestrator) -> None:
    db = workdir / "people.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table people (id integer primary key, name text, active integer)")
        conn.executemany("insert into people values (?, ?, ?)",
                         [(1, "ann", 1), (2, "bob", 0), (3, "cat", 1), (4, "dan", 1)])
    job = create(workdir, "--sql", "select id, name from people where active = 1 order by id",
                 "--sql-db", f"sqlite:///{db}", "--key", "id", "--command", UPPER)
    rows = orch.results(job)
    assert [(r["key"], r["id"], r["name"]) for r in rows] == [("1", 1, "ann"), ("3", 3, "cat"),
                                                               ("4", 4, "dan")]
    with sqlite3.connect(db) as conn:  # the query ran read-only and changed nothing
        assert conn.execute("select count(*) from people").fetchone() == (4,)


def test_python_generator_source_with_args(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "gen_people.py").write_text(
        "def people(count='2', prefix='p'):\n"
        "    for i in range(int(count)):\n"
        "        yield {'id': i, 'name': f'{prefix}{i}'}\n")
    created = ok_json("create", "--name", "gen", "--python", "gen_people:people", "--source-arg", "count=4",
                      "--source-arg", "prefix=q", "--command", UPPER, cwd=workdir)
    assert created["units"] == 4
    rows = orch.results(created["job_id"])
    assert [(r["id"], r["name"]) for r in rows] == [(0, "q0"), (1, "q1"), (2, "q2"), (3, "q3")]


def test_key_field_and_sync_add_only_new_items(workdir: Path, orch: Orchestrator) -> None:
    source = workdir / "tickets.csv"
    source.write_text("id,name\n10,ann\n11,bob\n12,cat\n")
    job = str(create(workdir, "--csv", "tickets.csv", "--key", "id", "--command", UPPER))
    assert ok_json("sync", job, cwd=workdir) == {"job_id": int(job), "added": 0, "existing": 3,
                                                 "status": "CREATED", "next": None}
    ok("start", job, "--skip-test", cwd=workdir)
    assert [r["output"] for r in finish(orch, int(job))] == ["ANN", "BOB", "CAT"]

    # rows appended, an existing row edited (same key): only the new keys become units
    source.write_text("id,name\n10,ann-edited\n11,bob\n12,cat\n13,dan\n14,eve\n")
    assert ok_json("sync", job, cwd=workdir) == {"job_id": int(job), "added": 2, "existing": 3,
                                                 "status": "PAUSED", "next": "resume"}
    assert ok_json("sync", job, cwd=workdir)["added"] == 0
    shown = ok_json("show", job, "key:13", cwd=workdir)  # a unit by its key
    assert shown["number"] == 4  # keys 10..12, then the first synced item
    assert ok_json("show", job, "4", cwd=workdir)["key"] == "13"  # a bare number is the number
    assert shown["payload"] == {"id": "13", "name": "dan"}

    assert orch.status(job).status == "PAUSED"  # new work for a finished job; resume runs only that
    ok("resume", job, cwd=workdir)
    rows = finish(orch, int(job))
    assert [(r["key"], r["name"], r["output"], r["attempts"]) for r in rows] == [
        ("10", "ann", "ANN", 1), ("11", "bob", "BOB", 1), ("12", "cat", "CAT", 1), ("13", "dan", "DAN", 1),
        ("14", "eve", "EVE", 1)]


def test_intent_prompt_is_shown_at_create_time(workdir: Path, orch: Orchestrator, names_csv: Path) -> None:
    intent = "Decide whether this person is a toddler"
    result = ok("create", "--name", "intent", "--csv", "names.csv", "--intent", intent,
                "--command", ECHO_PROMPT, cwd=workdir)
    job_id = int(result.stdout)
    template = orch.job(job_id).prompt_template
    assert template and intent in template and template != intent
    shown = " ".join(result.stderr.replace("│", " ").split())
    assert intent in shown
    assert " ".join(template.split()) in shown  # the whole synthesized prompt, not a cropped panel
    assert "ann" in shown and "age" in shown  # the first item's fields, rendered

    ok("start", str(job_id), cwd=workdir)
    unit = orch.unit(job_id, orch.status(job_id).test_unit)
    assert intent in unit.output and "ann" in unit.output


def test_watch_and_logs_follow_until_the_job_ends(workdir: Path, orch: Orchestrator) -> None:
    """`abp watch` and `abp logs --follow` return by themselves once the job is over."""
    (workdir / "slow.csv").write_text("name\n" + "".join(f"n{i}\n" for i in range(4)))
    job = create(workdir, "--csv", "slow.csv", "--command",
                 "python3 -c 'import sys, time; time.sleep(0.7); print(sys.argv[1])' {{ row.name }}",
                 "--concurrency", "2")
    ok("start", str(job), "--skip-test", cwd=workdir)
    watch = subprocess.Popen([*ABP, "watch", str(job)], cwd=workdir, stdout=subprocess.PIPE, text=True)
    logs = subprocess.Popen([*ABP, "logs", str(job), "--follow"], cwd=workdir, stdout=subprocess.PIPE, text=True)
    watch_out, _ = watch.communicate(timeout=60)
    logs_out, _ = logs.communicate(timeout=60)
    assert watch.returncode == 0 and "COMPLETED" in watch_out and "4/4 done" in watch_out
    assert logs.returncode == 0 and "executor started" in logs_out and "job completed: 4 unit(s)" in logs_out
