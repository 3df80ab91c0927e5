"""A process that runs a `python` worker's function for `--isolate-python`, one call at a time.

Started by `python_pool.HostPool` as `python -m agentic_batch.workers.python_host REF DIR...`: it
imports the function once, says {"ready": true}, then reads one JSON call per line on stdin and
answers one JSON line on its stdout; whatever the function prints goes to stderr (the executor's
log). The function may emit events through `ctx.emit`, forwarded as {"emit": ...} lines.

It is a child subreaper, so after each call it can kill everything the call started, even a
process that left its session: the next unit starts clean. Each call's environment carries the
unit's token, so the engine's watchdog finds such processes if the executor is killed mid-call.
The engine kills the whole host (and so the call) on timeout or cancel, and starts a new one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agentic_batch.engine.procs import UNIT_TOKEN_ENV, descendants, freeze_and_kill, process_table, set_child_subreaper
from agentic_batch.importing import load_callable
from agentic_batch.workers.base import PermanentError, UnitOutcome
from agentic_batch.workers.python_fn import call_plan


def _answer(out: Any, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, default=str) + "\n")
    out.flush()


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, UnitOutcome):
        return {"outcome": dataclasses.asdict(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"value": str(value)}
    return {"value": value}


def _kill_leftovers() -> None:
    """Everything below this process (orphans re-parent here: we are a subreaper)."""
    me = os.getpid()
    table = process_table()
    children = {pid for pid, (ppid, _, _) in table.items() if ppid == me}
    if children:
        freeze_and_kill(descendants(table, children))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)


def main(argv: list[str]) -> None:
    ref, dirs = argv[0], [Path(d) for d in argv[1:]]
    out = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and the function's prints go to stderr
    set_child_subreaper()
    try:
        func = load_callable(ref, dirs, "--function")
    except Exception as exc:
        _answer(out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    npos, wants_ctx = call_plan(func)
    _answer(out, {"ready": True})
    for line in sys.stdin:
        call = json.loads(line)
        os.environ.update(call.get("env") or {})
        info = call["ctx"]
        ctx = SimpleNamespace(**info, emit=lambda kind, data: _answer(out, {"emit": [kind, data]}))
        kwargs = {"ctx": ctx} if wants_ctx else {}
        try:
            value = func(*[info["payload"], info["prompt"]][:npos], **kwargs)
            if inspect.isawaitable(value):
                import asyncio

                value = asyncio.run(value)  # type: ignore[arg-type]
            reply = _value(value)
        except PermanentError as exc:
            reply = {"error": str(exc) or "PermanentError", "error_class": "permanent"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "error_class": "retryable"}
        os.environ.pop(UNIT_TOKEN_ENV, None)
        _kill_leftovers()
        _answer(out, reply)


if __name__ == "__main__":
    main(sys.argv[1:])
