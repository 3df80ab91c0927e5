"""`abp add`, `abp delete`, `abp prune` as a user runs them: the real CLI in a subprocess, real executors;
bad input is one line naming the flag or the item, exit 1, nothing added or deleted."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.abp import abp, abp_json


def make_job(workdir: Path) -> str:
    (workdir / "items.jsonl").write_text('{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n')
    result = abp("create", "--name", "cli-add", "--jsonl", "items.jsonl", "--key", "id",
                 "--command", "echo {{ name }}", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return str(result.stderr.strip())


def test_add_from_stdin_files_and_items_then_start(workdir: Path) -> None:
    job = make_job(workdir)
    piped = abp("add", job, "--jsonl", "-", input='{"id": 3, "name": "c"}\n{"id": 1, "name": "a"}\n', cwd=workdir)
    assert piped.returncode == 0 and "added 1 unit(s), skipped 1 duplicate(s)" in piped.stdout
    assert f"`abp start {job}` runs them" in piped.stdout
    (workdir / "more.json").write_text(json.dumps([{"id": 4, "name": "d"}]))
    both = abp_json("add", job, "--json", "more.json", "--item", '{"id": 5, "name": "e"}', cwd=workdir)
    assert (both["added"], both["duplicates"], both["status"]) == (2, 0, "CREATED")
    assert abp("start", job, "--skip-test", cwd=workdir).returncode == 0
    assert abp("wait", job, "--timeout", "60", cwd=workdir).returncode == 0
    again = abp("add", job, "--item", '{"id": 6, "name": "f"}', cwd=workdir)
    assert f"is PAUSED: `abp resume {job}` runs them" in again.stdout
    started = abp("add", job, "--item", '{"id": 7, "name": "g"}', "--start", cwd=workdir)
    assert "is RUNNING again" in started.stdout
    assert abp("wait", job, "--timeout", "60", cwd=workdir).returncode == 0
    assert abp_json("status", job, cwd=workdir)["completed"] == 7


def test_add_bad_input_is_one_line_and_adds_nothing(workdir: Path) -> None:
    job = make_job(workdir)
    assert one_line_error(abp("add", job, cwd=workdir)).startswith("error: no items given")
    assert "--item 1 is not JSON" in one_line_error(abp("add", job, "--item", "{oops", cwd=workdir))
    missing = one_line_error(abp("add", job, "--item", '{"id": 9, "name": "x"}', "--item", '{"id": 10}', cwd=workdir))
    assert "'name'" in missing and "--item 2" in missing
    assert "does not exist" in one_line_error(abp("add", job, "--jsonl", "nope.jsonl", cwd=workdir))
    assert "line 2 of stdin is not JSON" in one_line_error(
        abp("add", job, "--jsonl", "-", input='{"id": 9, "name": "x"}\nnope\n', cwd=workdir))
    assert "--start applies to a COMPLETED, PAUSED or FAILED job" in one_line_error(
        abp("add", job, "--item", '{"id": 9, "name": "x"}', "--start", cwd=workdir))
    assert abp_json("status", job, cwd=workdir)["total"] == 2


def test_delete_and_prune(workdir: Path) -> None:
    first, second = make_job(workdir), make_job(workdir)
    assert abp("start", first, "--skip-test", cwd=workdir).returncode == 0
    assert abp("wait", first, "--timeout", "60", cwd=workdir).returncode == 0
    dry = abp("prune", "--dry-run", cwd=workdir)
    assert f"would delete job {first}" in dry.stdout and "1 job(s) would be deleted" in dry.stdout
    assert "--older-than: '7 days' is not an age" in one_line_error(abp("prune", "--older-than", "7 days", cwd=workdir))
    assert "--status: prune removes" in one_line_error(abp("prune", "--status", "paused", cwd=workdir))
    assert "nothing" not in abp("prune", "--older-than", "1d", cwd=workdir).stdout
    assert abp_json("status", first, cwd=workdir)["status"] == "COMPLETED"  # ended just now: younger than a day
    gone = abp("delete", first, second, cwd=workdir)
    assert gone.returncode == 0 and gone.stdout.count("deleted job") == 2
    assert "no job" in one_line_error(abp("delete", first, cwd=workdir))
    assert abp_json("list", cwd=workdir) == []
