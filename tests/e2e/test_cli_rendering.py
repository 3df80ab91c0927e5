"""What the CLI prints, as a user sees it: `--help` text, untrusted text escaped, nothing cut off a
terminal, progress off a terminal, figures without noise. Every command runs as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentic_batch.service import Orchestrator
from tests.fixtures.abp import ABP, abp, wait_status

WIDE = {"COLUMNS": "1000"}  # so no help line wraps and a help text can be found verbatim


def _help(*command: str) -> str:
    result = abp(*command, "--help", env=WIDE, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commands() -> dict[str, list[str]]:
    """Each command and the help texts of its parameters, as declared."""
    import typer

    from agentic_batch import cli

    cli._register()
    commands = typer.main.get_command(cli.app).commands  # type: ignore[attr-defined]
    return {name: [p.help for p in command.params if getattr(p, "help", None) and not getattr(p, "hidden", False)]
            for name, command in sorted(commands.items())}


def _as_rendered(help_text: str) -> str:
    """A declared help text as --help should print it: Markdown's backslash escapes (`\\_`, `\\*`, which
    spec_options adds to model descriptions) and backticks gone, whitespace folded."""
    return " ".join(re.sub(r"\\(.)", r"\1", help_text).replace("`", "").split())


def test_help_has_no_type_label_on_flags_and_plain_usage() -> None:
    commands = _commands()
    with ThreadPoolExecutor(max_workers=2) as pool:
        pages = dict(zip(commands, pool.map(_help, commands), strict=True))
    pages["abp"] = _help()
    for command, text in pages.items():
        assert "<bool>" not in text, command
        assert "[[" not in text and "{JOB}" not in text, command
        assert re.search(r"Usage: abp", text), command
        flat = " ".join(text.split())
        for help_text in commands.get(command, []):  # Markdown ate nothing (a `*`, a `_`, a `[...]`)
            assert _as_rendered(help_text) in flat, (command, help_text)
    assert "Usage: abp status [OPTIONS] [JOB]" in pages["status"]
    assert "Usage: abp show [OPTIONS] JOB UNIT" in pages["show"]
    assert re.search(r"--json\s+Print JSON", pages["status"])


def test_create_help_renders_every_flag_help_literally() -> None:
    """Typer renders help as Markdown: a glob's `*` turned into emphasis and vanished ('**/.py')."""
    from agentic_batch.cli.spec_options import build_signature

    text = _help("create")
    assert "'**/*.py', 'docs/*.md'" in text
    flat = " ".join(text.split())
    signature, _ = build_signature([])
    for param in signature.parameters.values():
        info = typing.get_args(param.annotation)[1]
        if info.hidden:
            continue
        assert _as_rendered(info.help) in flat, info.help


def test_create_help_labels_worker_flags_by_their_type() -> None:
    text = _help("create")
    labels = {m.group(1): m.group(2) for m in re.finditer(r"│\s*(--[a-z-]+)(?:\s+--no-[a-z-]+)?\s+(<[^>]*>)?", text)}
    assert labels["--max-turns"] == "<int>" and labels["--max-tokens"] == "<int>"
    assert labels["--temperature"] == "<float>" and labels["--price-in"] == "<float>"
    assert labels["--concurrency"] == "<int>" and labels["--model"] == "<str>"
    assert labels["--allow-commands"] is None and labels["--permission-mode"] == "<choice>"
    assert labels["--source-arg"] == "<k=v>" and "list[" not in text


# -- untrusted text, content off a terminal ------------------------------------------------------

EVIL_NAME = "evil\x1b[2J\x1b]0;pwned\x07[bold]name[/bold]\u202e"
LONG = "x" * 500 + "-END"
PRINTER = ("python3 -c 'import sys; print(sys.argv[1]); print(\"\\x1b[31mred\\x1b[0m\\tafter tab\")' "
           "{{ text }}")


def _run_to_completion(orch: Orchestrator, workdir: Path, *args: str) -> int:
    created = abp("create", *args, cwd=workdir)
    assert created.returncode == 0, created.stderr
    job_id = int(created.stdout)
    assert abp("start", str(job_id), "--skip-test", cwd=workdir).returncode == 0
    wait_status(orch, job_id, {"COMPLETED", "FAILED", "PAUSED", "CANCELLED"})
    return job_id


def test_views_escape_control_characters_and_print_content_whole(workdir: Path, orch: Orchestrator) -> None:
    (workdir / "items.jsonl").write_text(json.dumps({"id": "key\x1b[31m\r[red]k", "text": LONG}) + "\n")
    job_id = _run_to_completion(orch, workdir, "--name", EVIL_NAME, "--jsonl", "items.jsonl", "--key", "id",
                                "--command", PRINTER)
    unit = str(orch.results(job_id)[0]["unit"])
    views = {what: abp(*args, cwd=workdir) for what, args in {
        "list": ["list"], "status-all": ["status"], "status": ["status", str(job_id)],
        "show": ["show", str(job_id), unit], "watch": ["watch", str(job_id)], "logs": ["logs", str(job_id)],
        "status-json": ["status", str(job_id), "--json"], "show-json": ["show", str(job_id), unit, "--json"],
        "results": ["results", str(job_id), "--format", "csv"]}.items()}
    for what, result in views.items():
        assert result.returncode == 0, (what, result.stderr)
        if what != "results":  # an export is data, not a view: it carries the bytes as they are
            for raw in ("\x1b", "\x07", "\r", "\u202e"):
                assert raw not in result.stdout + result.stderr, (what, raw)
    for what in ("list", "status-all", "status", "show"):
        assert "\\x1b[2J\\x1b]0;pwned\\x07[bold]name[/bold]\\u202e" in views[what].stdout or what == "show", what
    assert json.loads(views["status-json"].stdout)["name"] == EVIL_NAME  # escaped, still the same JSON value
    assert json.loads(views["show-json"].stdout)["key"] == "key\x1b[31m\r[red]k"
    show = views["show"].stdout
    assert "key\\x1b[31m\\r[red]k" in show  # the key, escaped, markup shown as written
    assert LONG in show  # a 504-character output line, whole (it was cut at 200 columns)
    assert re.search(r"\\x1b\[31mred\\x1b\[0m(\t| +)after tab", show)  # the escape shown, the tab kept (as spaces)
    # an error message quoting what the user typed escapes it too
    missing = abp("status", "no\x1b[2Jsuch[bold]job", cwd=workdir)
    assert missing.returncode == 1 and "\x1b" not in missing.stderr
    assert "no\\x1b[2Jsuch[bold]job" in missing.stderr
    # a command worker has no cost, tokens or turns to show
    for what in ("show", "status", "watch"):
        assert "$0.0000" not in views[what].stdout and "0/0 tokens" not in views[what].stdout, what
    assert "turn(s)" not in show


def test_watch_off_a_terminal_prints_progress_lines(workdir: Path, orch: Orchestrator) -> None:
    """A live panel off a terminal printed nothing until the end: now a line at once, one every
    --interval seconds while the job runs, and a final one."""
    go = workdir / "go"
    (workdir / "two.csv").write_text("name\nann\nbob\n")
    blocked = (f"python3 -c 'import os, time; [time.sleep(0.05) for _ in iter(lambda: os.path.exists(\"{go}\"), "
               "True)]; print(1)'")
    created = abp("create", "--name", "blocked", "--csv", "two.csv", "--command", blocked, cwd=workdir)
    job_id = int(created.stdout)
    assert abp("start", str(job_id), "--skip-test", cwd=workdir).returncode == 0
    watch = subprocess.Popen([*ABP, "watch", str(job_id), "--interval", "0.2"], cwd=workdir, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert watch.stdout is not None
        lines = [watch.stdout.readline(), watch.stdout.readline()]  # printed while the job runs
        go.touch()
        rest, errors = watch.communicate(timeout=60)
    finally:
        watch.kill()
    lines += rest.splitlines()
    assert watch.returncode == 0, errors
    assert all(line.startswith(f"job {job_id} RUNNING: 0/2 done") for line in lines[:2]), lines
    assert lines[-1].startswith(f"job {job_id} COMPLETED: 2/2 done (100.0%)"), lines
    # a job already over: one line, the final one
    assert abp("watch", str(job_id), cwd=workdir).stdout.splitlines() == [lines[-1].strip()]
