"""A full or unwritable disk under ABP_HOME, on a real tmpfs mount: `abp create` says in one line what
to free or fix and creates nothing; a running job waits out the full disk for the outage window, then
pauses with reason "store" (no silent death), and `abp resume` finishes it once space is back."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.spec import JobSpec
from tests.fixtures.abp import abp, processes_with, reap_stray_executors, wait_status, wait_until
from tests.fixtures.tmpfs import fill, remount_ro, tmpfs_mount

SLEEPER = Path(__file__).resolve().parents[1] / "fixtures" / "sleeper.py"


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ABP_HOME on its own 16 MB tmpfs."""
    with tmpfs_mount(tmp_path / "mnt", "16m") as mount:
        home = mount / "home"
        monkeypatch.setenv("ABP_HOME", str(home))
        try:
            yield home
        finally:
            reap_stray_executors(home)


def items(workdir: Path, n: int = 3) -> Path:
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    return path


def create(workdir: Path) -> Any:
    return abp("create", "--name", "d", "--jsonl", str(items(workdir)), "--key", "id", "--worker", "command",
               "--command", "echo {{ row.id }}", cwd=workdir)


def assert_one_clear_line(result: Any, *words: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    assert "Background on this error" not in lines[0] and "[SQL" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_create_on_a_full_disk_says_what_to_free_and_creates_nothing(small_home: Path, workdir: Path) -> None:
    assert create(workdir).returncode == 0  # the store exists, with one job
    filler = fill(small_home.parent / "filler")
    assert_one_clear_line(create(workdir), "disk full", "free space", "ABP_HOME")
    filler.unlink()
    listed = json.loads(abp("list", "--json", cwd=workdir).stdout)
    assert [job["id"] for job in listed] == [1]


def test_create_with_an_unwritable_home_says_what_to_fix(tmp_path: Path, workdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with tmpfs_mount(tmp_path / "ro", "1m") as mount:
        (mount / "existing").mkdir()
        remount_ro(mount)
        for home in (mount / "home", mount / "existing"):  # no home yet; a home with no store yet
            monkeypatch.setenv("ABP_HOME", str(home))
            assert_one_clear_line(create(workdir), "cannot write", "writable", str(home))
    regular = tmp_path / "a-file"
    regular.write_text("")
    monkeypatch.setenv("ABP_HOME", str(regular / "home"))  # a path under a regular file (root ignores modes)
    assert_one_clear_line(create(workdir), "cannot write", "not a directory", "ABP_HOME")


def test_running_job_on_a_full_disk_pauses_with_reason_store_and_resumes(
        small_home: Path, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentic_batch.service import Orchestrator

    monkeypatch.setenv("ABP_STORE_OUTAGE_SECONDS", "3")
    first, second = tmp_path / "gate-first", tmp_path / "gate-second"
    data = workdir / "gated.jsonl"
    data.write_text("".join(json.dumps({"id": i, "gate": str(first if i < 2 else second)}) + "\n"
                            for i in range(4)))
    orch = Orchestrator()
    try:
        job = orch.create(JobSpec(name="full", source={"kind": "jsonl", "path": str(data), "key": "id"},
                                  worker="command", concurrency=4, max_retries=0,
                                  worker_options={"command": f"{sys.executable} {SLEEPER} {{{{ row.id }}}} 0 "
                                                             "{{ row.gate }} 1000000"}), cwd=workdir).job_id
        orch.start(job, skip_test=True)
        wait_until(lambda: len(processes_with(str(second))) == 2, timeout=60, what="units 2 and 3 waiting")
        filler = fill(small_home.parent / "filler")
        first.touch()  # units 0 and 1 finish: their results (1 MB each) cannot be written
        # past the window the executor gives up and stops the agents still waiting (units 2 and 3)
        wait_until(lambda: not processes_with(str(second)), timeout=60, what="the executor to stop its agents")
        filler.unlink()  # space is back while the executor tries to record the pause
        paused = wait_status(orch, job, {"PAUSED"}, timeout=60)
        assert paused.pause_reason == "store" and paused.running == 0
        errors = [line.message for line in orch.logs(job, level="error")]
        assert any("store disk full" in m and "free space" in m and f"abp resume {job}" in m for m in errors), errors
        done = {r["key"]: r for r in orch.results(job)}
        # kept in memory, written on recovery
        assert done["0"]["output"].startswith("0\n") and done["1"]["output"].startswith("1\n")

        second.touch()
        orch.resume(job)
        final = wait_status(orch, job, {"COMPLETED", "FAILED"}, timeout=60)
        assert final.status == "COMPLETED"
        rows = orch.results(job)
        assert sorted(r["output"].split()[0] for r in rows) == ["0", "1", "2", "3"]
        assert [r["attempts"] for r in sorted(rows, key=lambda r: r["key"])][:2] == [1, 1]
    except AssertionError as exc:  # say what the executor did (its log may be cut: it lives on the full disk)
        log = small_home / "jobs" / str(job) / "executor.log"
        raise AssertionError(f"{exc}\n--- executor.log:\n{log.read_text() if log.exists() else ''}\n--- job log:\n"
                             + "\n".join(f"{line.level} {line.message}" for line in orch.logs(job))) from exc
    finally:
        orch.store.close()
