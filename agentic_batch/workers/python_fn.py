"""The `python` worker: call `module:function` per unit, sync or async.

The function receives the item's payload and the rendered prompt (whichever of the two it declares
positionally), and `ctx` if it has a parameter of that name. It returns a string (the output), any
JSON-able value (kept as structured data), or a `UnitOutcome` to report cost and tokens itself.
Raising `PermanentError` fails the unit at once; any other exception is retried.

A sync function runs in a daemon thread; on timeout it is abandoned, not killed (Python cannot kill
threads): the unit says so, and the executor still exits when the job ends. `--isolate-python` runs
each call in a host process instead (python_pool.py), killed with everything it started on timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.importing import load_callable
from agentic_batch.workers.base import ErrorClass, FailureKind, PermanentError, UnitContext, UnitOutcome, WorkerKind
from agentic_batch.workers.python_pool import DaemonThreads, HostDied, HostPool

#: The unit's error when a sync function outlives its timeout in a thread.
ABANDONED = "the function did not stop within the timeout; its thread was abandoned"


class PythonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: str = Field(description="module:function or path/to/file.py:function called per item")
    isolate_python: bool = Field(default=False, description="run each call in a worker process (a small reused "
                                 "pool) that a timeout kills with everything it started, instead of a thread "
                                 "that a timeout can only abandon")


def _check(options: Any, _prompt: str | None, workdir: Path) -> None:
    load_callable(options.function, [workdir], "--function")


def call_plan(func: Callable[..., Any]) -> tuple[int, bool]:
    """How many positional arguments (payload, prompt) the function takes, and whether it wants ctx."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return 2, False
    wants_ctx = any(p.name in ("ctx", "context") for p in params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name not in ("ctx", "context")]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2, wants_ctx
    return min(2, len(positional)), wants_ctx


def _outcome(value: Any) -> UnitOutcome:
    if isinstance(value, UnitOutcome):
        return value
    if value is None:
        return UnitOutcome(output="")
    if isinstance(value, str):
        return UnitOutcome(output=value)
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return UnitOutcome(output=str(value))
    return UnitOutcome(output=text, data=value)


class PythonWorker:
    kind = "python"

    def __init__(self, options: PythonOptions) -> None:
        self.options = options
        self._func: Callable[..., Any] | None = None
        self._plan = (2, False)
        self._threads = DaemonThreads()
        self._hosts: HostPool | None = None

    def _load(self, ctx: UnitContext) -> Callable[..., Any]:
        if self._func is None:
            dirs = [ctx.workdir] if ctx.workdir else []
            self._func = load_callable(self.options.function, [*dirs, Path.cwd()], "--function")
            self._plan = call_plan(self._func)
        return self._func

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        if self.options.isolate_python:
            return await self._run_isolated(ctx)
        started = time.monotonic()  # the engine's timeout runs from (about) here
        func = self._load(ctx)
        npos, wants_ctx = self._plan
        args = [ctx.payload, ctx.prompt][:npos]
        kwargs = {"ctx": ctx} if wants_ctx else {}
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(*args, **kwargs)
            else:
                try:
                    value = await self._threads.run(func, *args, **kwargs)
                except asyncio.CancelledError:
                    if time.monotonic() - started >= ctx.timeout * 0.95:
                        # The engine's timeout: the thread runs on, abandoned. Say so as the unit's
                        # error (retryable, like any timeout) instead of "agent killed".
                        ctx.emit("warning", {"message": ABANDONED})
                        return UnitOutcome.failure(ABANDONED, ErrorClass.retryable, FailureKind.timeout)
                    raise
                if inspect.isawaitable(value):
                    value = await value
        except PermanentError as exc:
            return UnitOutcome.failure(str(exc) or "PermanentError", ErrorClass.permanent)
        except Exception as exc:
            return UnitOutcome.failure(f"{type(exc).__name__}: {exc}", ErrorClass.retryable)
        return _outcome(value)

    async def _run_isolated(self, ctx: UnitContext) -> UnitOutcome:
        if self._hosts is None:
            dirs = [ctx.workdir] if ctx.workdir else []
            self._hosts = HostPool(self.options.function, [*dirs, Path.cwd()])
        info = {name: getattr(ctx, name) for name in ("job_id", "job_name", "unit_id", "key", "seq", "attempt",
                                                       "prompt", "payload", "source_kind", "timeout", "feedback")}
        info.update(workspace=str(ctx.workspace), workdir=str(ctx.workdir) if ctx.workdir else None,
                    allowed_dirs=[str(d) for d in ctx.allowed_dirs])
        try:
            reply = await self._hosts.call({"ctx": info, "env": ctx.processes.child_env()}, ctx.emit)
        except HostDied as exc:
            return UnitOutcome.failure(str(exc), ErrorClass.retryable, FailureKind.crashed)
        if "error" in reply:
            return UnitOutcome.failure(str(reply["error"]), ErrorClass(reply.get("error_class", "retryable")))
        if "outcome" in reply:
            fields = dict(reply["outcome"])
            if fields.get("error_class"):
                fields["error_class"] = ErrorClass(fields["error_class"])
            return UnitOutcome(**fields)
        return _outcome(reply.get("value"))

    async def aclose(self) -> None:
        if self._hosts is not None:
            await self._hosts.aclose()


KIND = WorkerKind(
    kind="python",
    summary="call a Python function per item (module:function, sync or async)",
    options_model=PythonOptions,
    factory=lambda options: PythonWorker(options),
    prompt_required=False,
    check=_check,
)
