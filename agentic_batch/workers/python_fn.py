"""The `python` worker: call `module:function` per unit, sync or async.

The function receives the item's payload and the rendered prompt (whichever of the two it declares
positionally), and `ctx` if it has a parameter of that name. It returns a string (the output), any
JSON-able value (kept as structured data), or a `UnitOutcome` to report cost and tokens itself.
Raising `PermanentError` fails the unit at once; any other exception is retried. A sync function
runs in a thread; on timeout it is abandoned, not killed (Python cannot kill threads), so prefer
async functions for work that may hang.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.importing import load_callable
from agentic_batch.workers.base import ErrorClass, PermanentError, UnitContext, UnitOutcome, WorkerKind


class PythonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: str = Field(description="module:function or path/to/file.py:function called per item")


def _check(options: Any, _prompt: str | None, workdir: Path) -> None:
    load_callable(options.function, [workdir], "--function")


def _call_plan(func: Callable[..., Any]) -> tuple[int, bool]:
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

    def _load(self, ctx: UnitContext) -> Callable[..., Any]:
        if self._func is None:
            dirs = [ctx.workdir] if ctx.workdir else []
            self._func = load_callable(self.options.function, [*dirs, Path.cwd()], "--function")
            self._plan = _call_plan(self._func)
        return self._func

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        func = self._load(ctx)
        npos, wants_ctx = self._plan
        args = [ctx.payload, ctx.prompt][:npos]
        kwargs = {"ctx": ctx} if wants_ctx else {}
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(*args, **kwargs)
            else:
                value = await asyncio.to_thread(func, *args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
        except PermanentError as exc:
            return UnitOutcome.failure(str(exc) or "PermanentError", ErrorClass.permanent)
        except Exception as exc:
            return UnitOutcome.failure(f"{type(exc).__name__}: {exc}", ErrorClass.retryable)
        return _outcome(value)


KIND = WorkerKind(
    kind="python",
    summary="call a Python function per item (module:function, sync or async)",
    options_model=PythonOptions,
    factory=lambda options: PythonWorker(options),  # type: ignore[arg-type]
    prompt_required=False,
    check=_check,
)
