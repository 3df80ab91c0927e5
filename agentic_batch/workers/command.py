"""The `command` worker: run a program per unit, argv rendered token by token, never via a shell.

`--command "wc -w {{ path }}"` is split with shlex first and each token is then rendered, so an item
value containing spaces, quotes or `; rm -rf /` stays one literal argument. stdout is the output;
an exit code outside `ok_exit_codes` (default 0) is an error with stderr kept, retryable only for exit
codes the user lists. The exit code, stdout and stderr are also kept apart on the unit's result
(`exit_code`, `stdout`, `stderr`: export columns).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.prompts import compile_template, referenced_fields, render
from agentic_batch.textcap import cut_marker
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome, WorkerKind
from agentic_batch.workers.process import exited, kill_group, spawn, terminate

_COMMAND = "worker_options.command"

_MAX_EVENT_LINES = 200
_STDERR_TAIL = 4000
#: stderr kept in memory (its tail goes into the error message).
_STDERR_KEEP = 1 << 20
_CHUNK = 1 << 16
#: An event shows at most this many bytes of one output line.
_EVENT_TEXT = 4000
#: After the command exits, how long its leftovers may keep its stdout/stderr open before they are killed.
DRAIN_GRACE_SECONDS = 1.5


class CommandOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(description="argv template, e.g. \"wc -w {{ path }}\"; split with shlex, "
                                     "each token rendered; never run through a shell")
    retry_exit_codes: list[int] = Field(default_factory=list,
                                        description="exit codes that mean 'try again' (comma list, e.g. 75,111)")
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0],
                                     description="exit codes that mean success (comma list; default 0; e.g. 0,5 "
                                                 "for pytest, whose 5 means no tests were collected)")
    cwd: str | None = Field(default=None, description="directory to run in (default: where the job was created)")

    @field_validator("retry_exit_codes", "ok_exit_codes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):  # flags give strings, possibly comma-joined
            try:
                codes = [int(str(part)) for item in value for part in str(item).replace(" ", "").split(",") if part]
            except ValueError:
                raise ValueError(f"{', '.join(str(v) for v in value)!r} is not a comma list of integers") from None
            if bad := [code for code in codes if not 0 <= code <= 255]:
                raise ValueError(f"exit code {bad[0]} is out of range: a process exits with 0 to 255")
            return codes
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> CommandOptions:
        if not self.ok_exit_codes:
            raise ValueError(f"{field_ref('worker_options.ok_exit_codes')} is empty: give at least one exit code")
        if both := sorted(set(self.ok_exit_codes) & set(self.retry_exit_codes)):
            raise ValueError(f"exit code {both[0]} is in both {field_ref('worker_options.ok_exit_codes')} and "
                             f"{field_ref('worker_options.retry_exit_codes')}")
        return self

    def tokens(self) -> list[str]:
        return split_command(self.command)


_TEMPLATE_EXPR = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def split_command(command: str) -> list[str]:
    """shlex-split a command template, keeping each `{{ ... }}` / `{% ... %}` inside its token.

    The template expressions are swapped for placeholders without spaces or quotes before
    splitting, then put back, so `wc -w {{ path }}` gives ["wc", "-w", "{{ path }}"].
    """
    expressions: list[str] = []

    def hide(match: re.Match[str]) -> str:
        expressions.append(match.group(0))
        return f"\x00{len(expressions) - 1}\x00"

    try:
        tokens = shlex.split(_TEMPLATE_EXPR.sub(hide, command))
    except ValueError as exc:
        raise InvalidSpec(f"{field_ref(_COMMAND)} {command!r} cannot be split: {exc}",
                          hint="balance the quotes") from None
    if not tokens:
        raise InvalidSpec(f"{field_ref(_COMMAND)} is empty")
    return [re.sub(r"\x00(\d+)\x00", lambda m: expressions[int(m.group(1))], token) for token in tokens]


def _check(options: Any, prompt: str | None, _workdir: Path) -> None:
    opts: CommandOptions = options
    for token in opts.tokens():
        compile_template(token, what="--command")
        if prompt is None and "prompt" in referenced_fields(token):
            raise InvalidSpec(f"{field_ref(_COMMAND)} uses {{{{ prompt }}}} but the job has no prompt",
                              hint=f"add {field_ref('prompt')} or {field_ref('intent')}")


def _sample_check(options: Any, payloads: list[dict[str, Any]], prompts: list[str | None],
                  _workdir: Path) -> None:
    """Render the argv templates against the first items: a missing field fails at create time."""
    from agentic_batch.prompts import validate

    for token in options.tokens():
        for index, payload in enumerate(payloads):
            prompt = prompts[index] if index < len(prompts) else None
            validate(token, [payload], what="--command", prompt=prompt,
                     unit={"id": 0, "key": "", "seq": index, "attempt": 1}, job={"id": 0, "name": ""})


class CommandWorker:
    kind = "command"

    def __init__(self, options: CommandOptions) -> None:
        self.options = options
        self.tokens = options.tokens()

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        try:
            argv = [render(token, ctx.payload, **ctx.template_vars) for token in self.tokens]
        except InvalidSpec as exc:
            return UnitOutcome.failure(f"--command: {exc.one_line()}", ErrorClass.permanent, FailureKind.prompt)
        cwd = str(ctx.in_worktree(Path(self.options.cwd))) if self.options.cwd else (
            str(ctx.workdir) if ctx.workdir else None)
        ctx.emit("command", {"argv": argv, "cwd": cwd})
        env = {**os.environ, "ABP_JOB_ID": str(ctx.job_id), "ABP_UNIT_ID": str(ctx.unit_id or ""),
               "ABP_UNIT_KEY": ctx.key, "ABP_ATTEMPT": str(ctx.attempt)}
        try:
            proc = await spawn(argv, cwd=cwd, env=env, tracker=ctx.processes)
        except FileNotFoundError:
            return UnitOutcome.failure(f"command not found: {argv[0]}", ErrorClass.permanent, FailureKind.setup)
        except PermissionError:
            return UnitOutcome.failure(f"permission denied running {argv[0]}", ErrorClass.permanent, FailureKind.setup)
        except OSError as exc:
            return UnitOutcome.failure(f"cannot run {argv[0]}: {exc}", ErrorClass.permanent, FailureKind.setup)
        out = OutputCapture(ctx.max_output_bytes, ctx.full_output_path)
        err = OutputCapture(min(_STDERR_KEEP, ctx.max_output_bytes or _STDERR_KEEP))
        readers = asyncio.ensure_future(asyncio.gather(_read(proc.stdout, ctx, "stdout", out),
                                                       _read(proc.stderr, ctx, "stderr", err)))
        exit_code = asyncio.ensure_future(exited(proc))
        try:
            # Usually the pipes close as the command exits (then plain wait() is cheapest); if the
            # command exits first, its leftovers hold a pipe: drain for a grace period.
            either: set[asyncio.Future[Any]] = {readers, exit_code}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            code = await proc.wait() if readers.done() else await exit_code
            if not await _settle(readers, DRAIN_GRACE_SECONDS):
                # The command is done but something it started still holds its stdout/stderr open
                # (`sleep 100 & echo done`): kill the group, keep what was read.
                ctx.emit("warning", {"message": f"the command exited but its background processes kept its "
                                                f"output open; they were killed after {DRAIN_GRACE_SECONDS:g}s"})
                kill_group(proc.pid)
                await _settle(readers, 0.5)  # a process that left the group may hold the pipe: give up
        finally:
            exit_code.cancel()
            readers.cancel()
            # Retrieve its outcome (a CancelledError when the unit itself is cancelled), or asyncio
            # prints "_GatheringFuture exception was never retrieved" with a traceback on stderr.
            readers.add_done_callback(lambda done: done.cancelled() or done.exception())
            out.close()
            await terminate(proc, ctx.processes)
        stdout, stderr = out.text(), err.text()
        ctx.emit("exit", {"code": code})
        if code in self.options.ok_exit_codes:
            return UnitOutcome(output=stdout.removesuffix("\n"), exit_code=code, stdout=stdout, stderr=stderr)
        tail = stderr.strip()[-_STDERR_TAIL:]
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return UnitOutcome.failure(f"killed by {name}" + (f": {tail}" if tail else ""), ErrorClass.retryable,
                                       FailureKind.killed, output=stdout or None, exit_code=code, stdout=stdout,
                                       stderr=stderr)
        error_class = ErrorClass.retryable if code in self.options.retry_exit_codes else ErrorClass.permanent
        return UnitOutcome.failure(f"exit code {code}" + (f": {tail}" if tail else ""), error_class,
                                   FailureKind.exit_status, output=stdout or None, exit_code=code, stdout=stdout,
                                   stderr=stderr)


async def _settle(task: asyncio.Future[Any], timeout: float) -> bool:
    """Wait up to `timeout` for `task` without cancelling it; True if it finished."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    return bool(done)


class OutputCapture:
    """A stream's bytes with bounded memory: under a cap, the first and last halves and a count of the
    bytes in between, which `text()` replaces with the engine's marker. Once the stream outgrows the
    cap, every byte also goes to `spill` (the attempt's full-output file) as it arrives, so nothing is
    lost and nothing large is held. No cap: everything, in memory."""

    def __init__(self, cap: int | None, spill: Path | None = None) -> None:
        self.cap = cap if cap is None or cap > 0 else None
        self.spill = spill
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._file: Any = None
        self._spill_failed = False

    def add(self, data: bytes) -> None:
        if self.cap is None:
            self.total += len(data)
            self.head += data
            return
        if self.total + len(data) > self.cap and self.total <= self.cap:
            self._open_spill()  # first overflow: head + tail are still everything read so far
        self.total += len(data)
        self._write(data)
        room = self.cap - self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            excess = len(self.tail) - self.cap // 2
            if excess > 0:
                del self.tail[:excess]

    def _open_spill(self) -> None:
        if self.spill is None:
            return
        try:
            self.spill.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.spill, "wb")  # noqa: SIM115 (closed in close())
            self._file.write(bytes(self.head) + bytes(self.tail))
        except OSError:
            self._spill_failed = True
            self.close()

    def _write(self, data: bytes) -> None:
        if self._file is not None:
            try:
                self._file.write(data)
            except OSError:
                self._spill_failed = True
                self.close()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def text(self) -> str:
        self.close()
        omitted = self.total - len(self.head) - len(self.tail)
        if omitted <= 0:
            return (self.head + self.tail).decode(errors="replace")
        kept = self.spill if self.spill is not None and not self._spill_failed else None
        return (self.head.decode(errors="ignore") + cut_marker(omitted, kept)
                + self.tail.decode(errors="ignore"))


async def _read(stream: asyncio.StreamReader | None, ctx: UnitContext, kind: str, capture: OutputCapture) -> None:
    """Collect a stream in chunks (a line may be any length), emitting its first lines as events so a
    slow command shows progress; an event shows at most the first `_EVENT_TEXT` bytes of a line."""
    if stream is None:
        return
    lines = 0
    pending = bytearray()
    skipping = False  # inside a line already emitted (cut): drop bytes up to its newline

    def emit(raw: bytes | bytearray, cut: bool = False) -> None:
        ctx.emit(kind, {"text": raw.decode(errors="replace").rstrip("\r") + (" …" if cut else "")})

    while chunk := await stream.read(_CHUNK):
        capture.add(chunk)
        if lines >= _MAX_EVENT_LINES:
            continue
        pending += chunk
        while lines < _MAX_EVENT_LINES and (newline := pending.find(b"\n")) >= 0:
            if not skipping:
                emit(pending[:min(newline, _EVENT_TEXT)], cut=newline > _EVENT_TEXT)
                lines += 1
            skipping = False
            del pending[:newline + 1]
        if len(pending) > _EVENT_TEXT:
            if not skipping and lines < _MAX_EVENT_LINES:
                emit(pending[:_EVENT_TEXT], cut=True)
                lines += 1
                skipping = True
            pending.clear()
    if pending and not skipping and lines < _MAX_EVENT_LINES:
        emit(pending)


KIND = WorkerKind(
    kind="command",
    summary="run a program per item (argv template, no shell); stdout is the output",
    options_model=CommandOptions,
    factory=lambda options: CommandWorker(options),
    prompt_required=False,
    check=_check,
    sample_check=_sample_check,
)
