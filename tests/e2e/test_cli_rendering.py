"""What the CLI prints, as a user sees it: `--help` text, untrusted text escaped, nothing cut off a
terminal, progress off a terminal, figures without noise. Every command runs as a real subprocess."""

from __future__ import annotations

import re
import typing
from concurrent.futures import ThreadPoolExecutor

from tests.fixtures.abp import abp

WIDE = {"COLUMNS": "1000"}  # so no help line wraps and a help text can be found verbatim


def _help(*command: str) -> str:
    result = abp(*command, "--help", env=WIDE, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commands() -> list[str]:
    import typer

    from agentic_batch import cli

    cli._register()
    return sorted(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]


def test_help_has_no_type_label_on_flags_and_plain_usage() -> None:
    commands = _commands()
    with ThreadPoolExecutor(max_workers=2) as pool:
        pages = dict(zip(commands, pool.map(_help, commands), strict=True))
    pages["abp"] = _help()
    for command, text in pages.items():
        assert "<bool>" not in text, command
        assert "[[" not in text and "{JOB}" not in text, command
        assert re.search(r"Usage: abp", text), command
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
        assert " ".join(info.help.replace("`", "").split()) in flat, info.help


def test_create_help_labels_worker_flags_by_their_type() -> None:
    text = _help("create")
    labels = {m.group(1): m.group(2) for m in re.finditer(r"│\s*(--[a-z-]+)(?:\s+--no-[a-z-]+)?\s+(<[^>]*>)?", text)}
    assert labels["--max-turns"] == "<int>" and labels["--max-tokens"] == "<int>"
    assert labels["--temperature"] == "<float>" and labels["--price-in"] == "<float>"
    assert labels["--concurrency"] == "<int>" and labels["--model"] == "<str>"
    assert labels["--allow-commands"] is None and labels["--permission-mode"] == "<choice>"
