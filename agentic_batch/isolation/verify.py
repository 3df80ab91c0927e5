"""The `--verify` command of an isolated job: an argv template run in the unit's worktree after the
agent, with the command worker's rules (shlex split, each token rendered, no shell).

A non-zero exit fails the attempt as retryable, and the next attempt's prompt ends with the last
lines of what the verifier printed, so the agent sees why its change was refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.workers.base import UnitContext, UnitOutcome

#: Lines of the verifier's output fed back to the next attempt and kept with the unit.
FEEDBACK_LINES = 60
#: The first words of a verify failure's error (its kind is FailureKind.verify_failed).
VERIFY_FAILED = "verify failed"


def verify_tokens(template: str) -> list[str]:
    """The argv template split into tokens, or one line naming `verify`."""
    from agentic_batch.workers.command import split_command

    try:
        return split_command(template)
    except InvalidSpec as exc:  # said of the command worker's option: say it of --verify
        message = exc.raw_message.replace(field_ref("worker_options.command"), field_ref("verify"))
        raise InvalidSpec(message, hint=exc.raw_hint) from None


def check_verify(template: str, payloads: list[dict[str, Any]]) -> None:
    """At create time: every token compiles and renders against the first items (a field the items
    lack is an error now, not in every unit later)."""
    from agentic_batch.prompts import compile_template, validate

    for token in verify_tokens(template):
        compile_template(token, what=field_ref("verify"))
        for index, payload in enumerate(payloads):
            validate(token, [payload], what=field_ref("verify"), prompt="",
                     unit={"id": 0, "key": "", "seq": index, "attempt": 1}, job={"id": 0, "name": ""})


def last_lines(text: str, count: int = FEEDBACK_LINES) -> str:
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-count:])


async def run_verify(template: str, ctx: UnitContext) -> tuple[bool, str]:
    """Run the verifier in `ctx.workdir` (the worktree); returns (passed, its output's last lines).

    It goes through the command worker, so it is killed with the unit's processes on timeout or
    cancel; its stdout/stderr lines become `verify` events of the attempt."""
    from agentic_batch.workers.command import CommandOptions, CommandWorker

    def emit(kind: str, data: dict[str, Any]) -> None:
        ctx.emit("verify" if kind in ("stdout", "stderr") else f"verify_{kind}", data)

    worker = CommandWorker(CommandOptions(command=template, cwd=str(ctx.workdir)))
    outcome: UnitOutcome = await worker.run(dataclasses.replace(ctx, emit=emit))
    text = "\n".join(part for part in (outcome.output, _stderr_of(outcome)) if part)
    return outcome.ok, last_lines(text)


def _stderr_of(outcome: UnitOutcome) -> str | None:
    """The command worker puts stderr's tail after `exit code N: ` in its error."""
    if not outcome.error:
        return None
    head, sep, tail = outcome.error.partition(": ")
    return tail if sep else head
