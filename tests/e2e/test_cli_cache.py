"""The result cache through the real `abp` CLI: `--cache`, the "N units cached, M to run, projected $X"
line of `abp start` and `abp retry`, `abp status` / `abp show`, the export's `cached_from` column, and
the bad input (`--cache` with `--isolate worktree`)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import abp, wait_status

UPPER = "python3 -c 'import sys; print(sys.argv[1].upper())' {{ prompt }}"


def ok(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = abp(*args, cwd=cwd)
    assert result.returncode == 0, f"abp {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def create(workdir: Path, name: str) -> int:
    return int(ok("create", "--name", name, "--jsonl", "items.jsonl", "--key", "id", "--command", UPPER,
                  "--prompt", "{{ row.name }}", "--cache", cwd=workdir).stdout.strip())


def test_start_retry_status_show_and_export_say_what_was_cached(workdir: Path, orch: Orchestrator) -> None:
    rows: list[dict[str, Any]] = [{"id": i, "name": f"n{i}"} for i in range(5)]
    (workdir / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = create(workdir, "first")
    started = ok("start", str(first), "--skip-test", cwd=workdir).stdout
    assert "0 units cached, 5 to run, projected cost unknown" in started
    wait_status(orch, first, {"COMPLETED"})

    second = create(workdir, "again")
    started = ok("start", str(second), "--skip-test", cwd=workdir).stdout
    assert re.search(r"5 units cached, 0 to run, projected \$0\.0000", started), started
    wait_status(orch, second, {"COMPLETED"})
    status = ok("status", str(second), cwd=workdir).stdout
    assert "5 cached" in status
    shown = ok("show", str(second), "2", cwd=workdir).stdout
    assert f"cached from job {first} unit 2" in shown and "N1" in shown
    exported = list(csv.DictReader(io.StringIO(ok("results", str(second), "--format", "csv", cwd=workdir).stdout)))
    assert [r["cached_from"] for r in exported] == [f"{first}/{n}" for n in range(1, 6)]
    as_json = json.loads(ok("status", str(second), "--json", cwd=workdir).stdout)
    assert as_json["cached"] == 5 and as_json["cache"] is True

    # Edit one item's prompt away from the cache, retry: only that unit runs again.
    ok("edit", str(second), "--prompt", "{{ row.name }}{% if row.id == 2 %}x{% endif %}", cwd=workdir)
    retried = ok("retry", str(second), cwd=workdir).stdout
    assert "0 units cached, 1 to run" in retried and "4 completed unit(s) unchanged" in retried
    wait_status(orch, second, {"COMPLETED"})
    assert orch.unit_view(second, 3).output == "N2X"


def test_cache_with_isolation_is_one_line_and_creates_nothing(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "items.jsonl").write_text('{"id": 1, "name": "a"}\n')
    result = abp("create", "--name", "iso", "--jsonl", "items.jsonl", "--command", "true", "--cache",
                 "--isolate", "worktree", cwd=workdir)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--cache does not apply to --isolate worktree jobs" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert orch.list_jobs() == []
