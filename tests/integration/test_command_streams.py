"""The `command` worker's exit codes that mean success (`ok_exit_codes`), and its exit code, stdout and
stderr kept apart on the unit's result and exported as columns: real detached executors, both stores."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import wait_status
from tests.fixtures.stores import orch_on_both_stores  # noqa: F401  (runs every test on SQLite and PostgreSQL)

#: Prints to both streams, then exits with the item's code (no shell: argv rendered per item).
SCRIPT = "import sys; print('out', sys.argv[1]); print('err', sys.argv[1], file=sys.stderr); sys.exit(int(sys.argv[1]))"


def job_with_codes(orch, workdir: Path, codes: list[int], **options: object) -> int:  # type: ignore[no-untyped-def]
    (workdir / "codes.jsonl").write_text("".join(json.dumps({"code": c}) + "\n" for c in codes))
    spec = JobSpec(name="streams", source={"kind": "jsonl", "path": str(workdir / "codes.jsonl"), "key": "code"},
                   worker="command", max_retries=0,
                   worker_options={"command": f"{sys.executable} -c \"{SCRIPT}\" {{{{ code }}}}", **options})
    job = orch.create(spec, cwd=workdir).job_id
    orch.start(job, skip_test=True)
    return int(job)


def test_ok_exit_codes_make_a_unit_complete_and_every_stream_is_kept(orch, workdir: Path) -> None:
    job = job_with_codes(orch, workdir, [0, 5, 3], ok_exit_codes="0,5")
    final = wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert (final.status, final.completed, final.failed) == ("FAILED", 2, 1)
    by_code = {r["code"]: r for r in orch.results(job)}
    assert by_code[5]["status"] == "COMPLETED" and by_code[5]["output"] == "out 5"  # the output as ever
    assert (by_code[5]["exit_code"], by_code[5]["stdout"], by_code[5]["stderr"]) == (5, "out 5\n", "err 5\n")
    assert by_code[3]["status"] == "FAILED" and by_code[3]["error"] == "exit code 3: err 3"
    assert (by_code[3]["exit_code"], by_code[3]["stdout"], by_code[3]["stderr"]) == (3, "out 3\n", "err 3\n")
    unit = orch.unit_view(job, f"key:{5}")
    assert (unit.exit_code, unit.stdout, unit.stderr) == (5, "out 5\n", "err 5\n")


def test_without_ok_exit_codes_only_0_succeeds_and_exports_have_the_columns(orch, workdir: Path) -> None:
    job = job_with_codes(orch, workdir, [0, 5])
    wait_status(orch, job, {"COMPLETED", "FAILED"})
    rows = list(csv.DictReader(io.StringIO("".join(orch.export(job, "csv")))))
    assert [(r["code"], r["status"], r["exit_code"], r["stdout"], r["stderr"]) for r in rows] == [
        ("0", "COMPLETED", "0", "out 0\n", "err 0\n"), ("5", "FAILED", "5", "out 5\n", "err 5\n")]
    lines = [json.loads(line) for line in "".join(orch.export(job, "jsonl")).splitlines()]
    assert [(r["exit_code"], r["stderr"]) for r in lines] == [(0, "err 0\n"), (5, "err 5\n")]
    orch.retry(job)  # a retry starts the unit afresh: the new attempt's streams replace the old
    wait_status(orch, job, {"COMPLETED", "FAILED"})
    assert orch.results(job, status="failed")[0]["exit_code"] == 5
