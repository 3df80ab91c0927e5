"""Turning flags into a JobSpec: one clear error per mistake; command templates split safely."""

from __future__ import annotations

from typing import Any

import pytest

from agentic_batch.cli.spec_options import JSON_OUTPUT_FLAG, rewrite_json_flag, spec_from_options, worker_params
from agentic_batch.errors import InvalidSpec
from agentic_batch.workers.command import CommandOptions, split_command


def values(**kw: Any) -> dict[str, Any]:
    base = {"name": "n", "concurrency": 4, "max_retries": 3, "timeout": 60.0, "priority": "normal"}
    return {**base, **kw}


OWNERS = worker_params()[1]


def test_bare_json_is_the_output_flag_and_json_path_is_a_source() -> None:
    source = ["create", "--json", "a.json", "--name", "x"]
    assert rewrite_json_flag(source) == source
    assert rewrite_json_flag(["create", "--csv", "a.csv", "--json"]) == ["create", "--csv", "a.csv", JSON_OUTPUT_FLAG]
    assert rewrite_json_flag(["create", "--json", "--csv", "a.csv"]) == ["create", JSON_OUTPUT_FLAG, "--csv", "a.csv"]


def test_worker_inferred_from_its_flags() -> None:
    spec = spec_from_options(values(csv="a.csv", command="echo {{ row.x }}"), OWNERS)
    assert spec.worker == "command" and spec.worker_options == {"command": "echo {{ row.x }}"}
    spec = spec_from_options(values(jsonl="a.jsonl", function="m:f"), OWNERS)
    assert spec.worker == "python"


@pytest.mark.parametrize(("kw", "message"), [
    ({}, "no source given"),
    ({"csv": "a", "jsonl": "b", "command": "x"}, "give one source"),
    ({"csv": "a"}, "no worker given"),
    ({"csv": "a", "worker": "python", "command": "x"}, "--command does not apply to the python worker"),
    ({"csv": "a", "worker": "nope"}, "unknown worker kind"),
    ({"csv": "a", "command": "x", "concurrency": 0}, "--concurrency"),
    ({"csv": "a", "command": "x", "timeout": -1.0}, "--timeout"),
    ({"csv": "a", "command": "x", "prompt": "a", "intent": "b"}, "give one of"),
    ({"sql": "select 1", "command": "x"}, "--sql-db"),
    ({"csv": "a", "command": "x", "root": "/tmp"}, "--root applies to --files only"),
    ({"python": "m:f", "source_arg": ["novalue"], "command": "x"}, "k=v"),
])
def test_bad_flags_give_one_clear_error(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace("(", r"\(")):
        spec_from_options(values(**kw), OWNERS)


def test_command_tokens_keep_template_expressions_whole() -> None:
    assert split_command("wc -w {{ path }}") == ["wc", "-w", "{{ path }}"]
    assert split_command("tool --name='{{ row.a }} b' {{ x | default('y z') }}") == \
        ["tool", "--name={{ row.a }} b", "{{ x | default('y z') }}"]
    with pytest.raises(InvalidSpec, match="cannot be split"):
        split_command("echo 'unterminated")


def test_retry_exit_codes_accept_a_comma_list() -> None:
    assert CommandOptions(command="x", retry_exit_codes="75, 111").retry_exit_codes == [75, 111]  # type: ignore[arg-type]
