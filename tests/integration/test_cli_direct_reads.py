"""`abp list`, `abp status [JOB]` and `abp show JOB UNIT` print the same, byte for byte, whether they are
answered by the direct reads (`cli.quick` on `store.direct`: no Typer, pydantic, SQLAlchemy or psycopg) or by the
full CLI (`ABP_DIRECT_READS=0`: Typer, the Orchestrator, SQLAlchemy): on SQLite and PostgreSQL, piped
and on a terminal, `--json` and tables, and for every error and usage case the direct path hands over.

Each command runs in a real `abp` process, twice, with the clock frozen at the same instant (ages,
rates and ETAs are derived from it), on one store holding what the views show: every unit status,
cost and tokens, a running executor here and one on another host, a stopped one, a paused job with
a budget and a quota hold, a batch job with provider batches, cached units, a reduce step, names
with markup, control characters and wide characters, a conversation of every event kind.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.engine.procs import hostname, pid_start_token
from tests.fixtures.stores import orchestrator_on

NOW = 1_790_000_000.0

#: Runs the CLI with the clock frozen at argv[2]; writes which heavy packages it imported to argv[1].
_PROBE = """
import atexit, json, sys, time
now = float(sys.argv[2])
time.time = lambda: now
heavy = ("sqlalchemy", "pydantic", "typer", "click", "psycopg")
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps([m for m in heavy if m in sys.modules])))
from agentic_batch.cli import main
main(sys.argv[3:])
"""

#: Runs several command lines in one process (as the entry point does, stdout and stderr captured per
#: line), so the ~50 lines of the comparison cost two interpreters, not a hundred, on a loaded machine;
#: after each, which heavy packages the process has imported so far. Argv: result file, clock, lines.
_BATCH = """
import io, json, sys, time
now = float(sys.argv[2])
time.time = lambda: now
from agentic_batch.cli import main
results = []
for argv in json.loads(sys.argv[3]):
    out, err = io.BytesIO(), io.BytesIO()
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    sys.stdout.flush(), sys.stderr.flush()
    printed = [out.getvalue().hex(), err.getvalue().hex()]  # before the wrappers go (closing their buffers)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    heavy = [m for m in ("sqlalchemy", "pydantic", "typer", "click", "psycopg") if m in sys.modules]
    results.append([code, *printed, heavy])
open(sys.argv[1], "w").write(json.dumps(results))
"""


def _sql(orch: Any, statement: str, **params: Any) -> Any:
    import sqlalchemy as sa

    with orch.store.database.engine.begin() as conn:
        return conn.execute(sa.text(statement), params)


def _create(orch: Any, workdir: Path, name: str, items: list[dict[str, Any]], **spec: Any) -> int:
    path = workdir / f"items-{abs(hash(name))}.jsonl"
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    full = {"name": name, "source": {"kind": "jsonl", "path": str(path)}, "worker": "command",
            "worker_options": {"command": "true"}, **spec}
    return int(orch.create(full, cwd=workdir).job_id)


def _fill(orch: Any, workdir: Path) -> dict[str, int]:
    """The jobs the commands read (ids by role)."""
    items = [{"title": f"item {i}", "text": "naïve 名前 🚀 \u009b[31m"} for i in range(6)]
    main = _create(orch, workdir, "main", items, worker="claude", worker_options={}, prompt="Summarise {{ title }}")
    _sql(orch, "UPDATE units SET prompt = 'Summarise the item' WHERE job_id = :j", j=main)  # as if each had run
    _sql(orch, "UPDATE jobs SET status = 'RUNNING', started_at = :t, running_since = :t, active_seconds = 12.5, "
               "budget_usd = 5.0 WHERE id = :j", t=NOW - 3600, j=main)
    _sql(orch, "UPDATE units SET status = 'COMPLETED', output = 'a summary\nof two lines', cost_usd = 0.0123, "
               "tokens_in = 1200, tokens_out = 340, turns = 3, attempt = 1, session_id = 's-1', "
               "started_at = :t, finished_at = :t + 2.5, data = :d WHERE job_id = :j AND number IN (1, 2)",
         t=NOW - 600, j=main, d=json.dumps({"label": "bug", "score": 0.5}))
    _sql(orch, "UPDATE units SET status = 'FAILED', error = 'HTTP 400: bad [bold]request[/bold]\x1b[2J', "
               "error_class = 'permanent', attempt = 3, error_count = 3, cost_usd = 0.001, started_at = :t, "
               "finished_at = :t + 1 WHERE job_id = :j AND number = 3", t=NOW - 500, j=main)
    here, there, gone = "ex-here", "ex-there", "ex-gone"
    orch.store.executors.register_executor(here, main, hostname(), os.getpid(), pid_start_token(os.getpid()))
    orch.store.executors.register_executor(there, main, "another-host", 4242, None)
    orch.store.executors.register_executor(gone, main, "another-host", 4343, None)
    _sql(orch, "UPDATE executors SET started_at = :s, heartbeat_at = :h WHERE id = :e", s=NOW - 300, h=NOW - 2, e=here)
    _sql(orch, "UPDATE executors SET started_at = :s, heartbeat_at = :h WHERE id = :e", s=NOW - 200, h=NOW - 5,
         e=there)
    _sql(orch, "UPDATE executors SET state = 'stopped', started_at = :s, heartbeat_at = :h WHERE id = :e",
         s=NOW - 900, h=NOW - 800, e=gone)
    _sql(orch, "UPDATE units SET lease_owner = :o WHERE job_id = :j AND number IN (1, 2)", o=here, j=main)
    _sql(orch, "UPDATE units SET status = 'RUNNING', attempt = 1, started_at = :t, lease_owner = :o, "
               "lease_expires_at = :t + 60 WHERE job_id = :j AND number IN (4, 5)", t=NOW - 42, o=there, j=main)
    unit_ids = dict(_sql(orch, "SELECT number, id FROM units WHERE job_id = :j", j=main).all())
    kinds = [("start", {"attempt": 1, "worker": "claude"}), ("assistant", {"text": "Looking [red]at[/red] it"}),
             ("thinking", {"text": "hmm\nstill thinking"}), ("tool_use", {"name": "Read", "input": {"path": "a.md"}}),
             ("tool_result", {"content": "x" * 700, "is_error": False}),
             ("tool_result", {"content": "no", "is_error": True}),
             ("command", {"argv": ["wc", "-w", "a b.md"]}), ("stdout", {"text": "12 a.md\n"}),
             ("stderr", {"text": "warning\x07"}), ("note", {"text": "output cut to 1 MB"}),
             ("error", {"error": "timeout", "error_class": "retryable"}), ("end", {"duration_s": 75.2}),
             ("result", {"cost_usd": 0.0123, "turns": 3}), ("custom", {"anything": [1, 2, 3]})]
    for number in (1, 4, 5):
        for seq, (kind, data) in enumerate(kinds if number == 1 else kinds[:seq_cut(number)]):
            _sql(orch, "INSERT INTO events (job_id, unit_id, attempt, seq, ts, kind, data) "
                       "VALUES (:j, :u, 1, :s, :t, :k, :d)",
                 j=main, u=unit_ids[number], s=seq, t=NOW - 400 + seq, k=kind, d=json.dumps(data))

    paused = _create(orch, workdir, "[bold]paused[/bold] \x1b[31m名前", items[:3], priority="high")
    _sql(orch, "UPDATE jobs SET status = 'PAUSED', pause_reason = 'budget', budget_usd = 0.01, hold_until = :h, "
               "active_seconds = 99.25, started_at = :s, reduce_prompt = 'Sum up', reduce_status = 'FAILED', "
               "reduce_error = 'no model' WHERE id = :j", h=NOW + 120, s=NOW - 7200, j=paused)

    batch = _create(orch, workdir, "batch", items[:4], worker="openai",
                    worker_options={"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "PATH"},
                    prompt="Label {{ title }}")
    _sql(orch, "UPDATE units SET prompt = 'Label it' WHERE job_id = :j", j=batch)
    _sql(orch, "UPDATE jobs SET status = 'RUNNING', running_since = :t, batch_api = :yes, priority = 7 "
               "WHERE id = :j", t=NOW - 100, yes=True, j=batch)
    for state, provider_id, counts in (("in_progress", "batch_abc", {"total": 3, "succeeded": 1, "errored": 1}),
                                       ("intent", None, None), ("done", "batch_old", {"total": 1, "succeeded": 1})):
        _sql(orch, "INSERT INTO batches (job_id, provider, tag, provider_id, state, provider_status, units, counts, "
                   "projected_usd, created_at, submitted_at, updated_at) VALUES (:j, 'openai', :tag, :p, :s, :ps, 2, "
                   ":c, 0.004, :t, :sub, :t)",
             j=batch, tag=f"t-{state}", p=provider_id, s=state, ps=state if provider_id else None,
             c=json.dumps(counts) if counts is not None else None, t=NOW - 50, sub=NOW - 40 if provider_id else None)

    cached = _create(orch, workdir, "twin", items[:2], cache=True)
    _sql(orch, "UPDATE jobs SET status = 'COMPLETED', finished_at = :t, started_at = :t - 10, active_seconds = 10 "
               "WHERE id = :j", t=NOW - 60, j=cached)
    _sql(orch, "UPDATE units SET status = 'COMPLETED', output = 'copied', cached_from = :u, started_at = :t, "
               "finished_at = :t WHERE job_id = :j", u=unit_ids[1], t=NOW - 60, j=cached)
    _create(orch, workdir, "twin", items[:1])  # a second job of that name: `status twin` is refused
    templated = _create(orch, workdir, "templated", items[:2], prompt="Summarise {{ title }}")
    return {"main": main, "paused": paused, "batch": batch, "cached": cached, "templated": templated}


def seq_cut(number: int) -> int:
    return 3 if number == 4 else 5


def _commands(ids: dict[str, int]) -> list[tuple[list[str], bool]]:
    """(argv, answered by the direct path)."""
    main, paused, batch, cached, templated = (str(ids[k]) for k in ("main", "paused", "batch", "cached",
                                                                    "templated"))
    commands = [(["list"], True), (["list", "--json"], True), (["list", "--status", "running,paused"], True),
                (["list", "--status=cancelled"], True), (["list", "--json", "--status", "COMPLETED"], True),
                (["status"], True), (["status", "--json"], True), (["status", "last"], True),
                (["status", "main"], True), (["show", main, "1", "--json"], True),
                (["show", "--json", main, "3"], True),
                (["show", main, "1"], True), (["show", main, "4"], True), (["show", cached, "2"], True),
                (["show", cached, "1", "--json"], True), (["show", templated, "1"], True),  # previewed (Jinja2)
                (["show", templated, "2", "--json"], True),
                # handed over: errors, usage, help, what the direct reads do not do
                (["status", "twin"], False), (["status", "999"], False), (["status", "٣"], False),
                (["show", main, "99"], False), (["show", main, "key:nope"], False),
                (["list", "--status", "bogus"], False), (["list", "--help"], False), (["list", "--bogus"], False),
                (["status", main, "extra"], False), (["show", main], False), (["list", "--status"], False)]
    for job in (main, paused, batch, cached, templated):
        commands += [(["status", job], True), (["status", job, "--json"], True)]
    return commands


def _run(argv: list[str], direct: bool, tmp_path: Path, tty: bool = False) -> tuple[int, bytes, bytes, list[str]]:
    """(exit code, stdout, stderr, heavy packages imported) of one `abp` process."""
    probe = tmp_path / "imported.json"
    env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("ABP_DIRECT_READS", None)
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    if not direct:
        env["ABP_DIRECT_READS"] = "0"
    command = [sys.executable, "-c", _PROBE, str(probe), repr(NOW), *argv]
    if not tty:
        proc = subprocess.run(command, capture_output=True, env=env, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr, json.loads(probe.read_text())
    leader, follower = pty.openpty()
    child = subprocess.Popen(command, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.stderr is not None
    stderr = child.stderr.read()
    child.wait(timeout=60)
    return child.returncode, b"".join(chunks), stderr, json.loads(probe.read_text())


@pytest.fixture(params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> Iterator[dict[str, int]]:
    with orchestrator_on(request.param, monkeypatch) as orch:
        yield _fill(orch, workdir)


def _batch(lines: list[list[str]], direct: bool, tmp_path: Path) -> list[tuple[int, bytes, bytes, list[str]]]:
    """(exit code, stdout, stderr, heavy packages imported so far) of each line, run in one `abp` process."""
    result = tmp_path / f"batch-{direct}.json"
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    env["ABP_DIRECT_READS"] = "1" if direct else "0"
    proc = subprocess.run([sys.executable, "-c", _BATCH, str(result), repr(NOW), json.dumps(lines)],
                          capture_output=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return [(code, bytes.fromhex(out), bytes.fromhex(err), heavy)
            for code, out, err, heavy in json.loads(result.read_text())]


def test_direct_and_full_reads_print_the_same(filled: dict[str, int], tmp_path: Path) -> None:
    commands = _commands(filled)
    direct_first = [argv for argv, direct in commands if direct] + [argv for argv, direct in commands if not direct]
    full = _batch(direct_first, direct=False, tmp_path=tmp_path)
    direct = _batch(direct_first, direct=True, tmp_path=tmp_path)
    answered = {tuple(argv) for argv, is_direct in commands if is_direct}
    for argv, f, d in zip(direct_first, full, direct, strict=True):
        assert f[3] != [], f"abp {argv}: the full CLI did not run"
        assert d[:3] == f[:3], f"abp {' '.join(argv)}: direct {d[:3]!r}\nfull {f[:3]!r}"
        if tuple(argv) in answered:
            assert d[0] == 0 and (d[1] or d[2]), argv
            assert d[3] == [], f"abp {' '.join(argv)}: the process imported {d[3]} (answered by the full CLI?)"
        else:
            assert d[3] != [], f"abp {' '.join(argv)}: not handed over to the full CLI"


def test_each_read_command_alone_is_answered_in_a_process_of_its_own(filled: dict[str, int], tmp_path: Path) -> None:
    """The entry point itself (not a loop around `main`): stdout and stderr are the process's own."""
    main = str(filled["main"])
    for argv in (["list"], ["status", main], ["status", main, "--json"], ["show", main, "1"], ["status", "999"]):
        full = _run(argv, direct=False, tmp_path=tmp_path)
        direct = _run(argv, direct=True, tmp_path=tmp_path)
        assert direct[:3] == full[:3], f"abp {' '.join(argv)}: direct {direct[:3]!r}\nfull {full[:3]!r}"
        assert (direct[3] == []) == (argv != ["status", "999"]), argv


def test_direct_and_full_reads_draw_the_same_on_a_terminal(filled: dict[str, int], tmp_path: Path) -> None:
    main, batch, paused = str(filled["main"]), str(filled["batch"]), str(filled["paused"])
    for argv in (["list"], ["status", main], ["status", batch], ["status", paused], ["show", main, "1"],
                 ["show", main, "3"]):
        full = _run(argv, direct=False, tmp_path=tmp_path, tty=True)
        direct = _run(argv, direct=True, tmp_path=tmp_path, tty=True)
        assert b"\x1b[" in full[1], f"abp {argv}: not drawn for a terminal"
        assert direct[:3] == full[:3], f"abp {' '.join(argv)}: direct {direct[:3]!r}\nfull {full[:3]!r}"
        assert direct[3] == [], argv


def test_a_newer_store_is_refused_on_the_direct_path_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         workdir: Path) -> None:
    with orchestrator_on("sqlite", monkeypatch) as orch:
        job = _create(orch, workdir, "x", [{"a": 1}])
        _sql(orch, "UPDATE alembic_version SET version_num = '9999'")
    for argv in (["list"], ["status", str(job)], ["show", str(job), "1"]):
        code, out, err, _ = _run(argv, direct=True, tmp_path=tmp_path)
        assert (code, out) == (1, b""), argv
        assert err.decode().startswith("error: ") and "schema revision 9999, newer than this agentic-batch knows" \
            in err.decode() and len(err.decode().strip().splitlines()) == 1, err


def test_no_store_yet_is_the_full_clis_answer(tmp_path: Path) -> None:
    """No store file: the full CLI creates it (as always) and says there are no jobs, or no such job."""
    assert _run(["list"], direct=True, tmp_path=tmp_path)[:3] == _run(["list"], direct=False, tmp_path=tmp_path)[:3]
    code, out, err, imported = _run(["status", "1"], direct=True, tmp_path=tmp_path)
    assert (code, out, err) == (1, b"", b"error: no job '1' (see `abp list` for job ids)\n")


def test_the_direct_reads_decode_the_columns_the_schema_declares() -> None:
    import sqlalchemy as sa

    from agentic_batch.store import direct, schema

    for table in (schema.jobs, schema.units, schema.events, schema.batches, schema.executors):
        assert direct.JSON_COLUMNS[table.name] == {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        assert direct.BOOLEAN_COLUMNS[table.name] == {c.name for c in table.columns if isinstance(c.type, sa.Boolean)}
