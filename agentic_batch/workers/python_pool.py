"""Where a `python` worker's sync function runs: daemon threads by default, host processes with
`--isolate-python`.

Python cannot stop a thread. A sync function that ignores its timeout keeps running; in a daemon
thread (not asyncio's default executor, whose threads the interpreter joins at exit) it at least
cannot keep the executor alive after the job ends: the executor writes its final status, releases
its host lock and exits while the abandoned thread is still running.

With `--isolate-python` each call runs in a host process (`python_host.py`) instead: a small pool,
grown to the job's concurrency and reused call after call. A call that times out or is cancelled
takes its host down with everything the call started; a new host replaces it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentic_batch.engine.procs import descendants, freeze_and_kill, process_table
from agentic_batch.workers.process import kill_group, pdeathsig_preexec

#: An idle daemon thread waits this long for another call before it exits.
_IDLE_SECONDS = 30.0


class DaemonThreads:
    """Runs sync calls in reusable daemon threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # queues of idle threads

    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            import queue

            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="abp-python-fn", daemon=True).start()
        inbox.put((future, call))
        return await asyncio.wrap_future(future)

    def _serve(self, inbox: Any) -> None:
        import queue

        while True:
            try:
                future, call = inbox.get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken just now: a call is on its way
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._idle.append(inbox)


class HostDied(Exception):
    """The host process ended without answering (the function called os._exit, a crash, OOM)."""


class _Host:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def kill(self) -> None:
        """SIGKILL the host, its group and everything below it (it is a subreaper: orphans stay below)."""
        pid = self.proc.pid
        freeze_and_kill(descendants(process_table(), {pid}) - {pid})
        kill_group(pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class HostPool:
    """Warm host processes for one function."""

    def __init__(self, ref: str, dirs: list[Path]) -> None:
        self.ref = ref
        self.dirs = dirs
        self._idle: list[_Host] = []
        self._spare: asyncio.Task[_Host] | None = None

    async def _start(self) -> _Host:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentic_batch.workers.python_host", self.ref, *map(str, self.dirs),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            start_new_session=True, preexec_fn=pdeathsig_preexec, limit=1 << 30)
        host = _Host(proc)
        assert proc.stdout is not None
        try:
            line = await proc.stdout.readline()
        except BaseException:
            host.kill()  # cancelled while it started: never leave one behind
            raise
        hello = json.loads(line) if line.strip() else {"ready": False, "error": "the host process exited"}
        if not hello.get("ready"):
            host.kill()
            raise HostDied(f"cannot load {self.ref}: {hello.get('error')}")
        return host

    async def _take(self) -> _Host:
        if self._idle:
            return self._idle.pop()
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                return await spare
        return await self._start()

    def _replace(self) -> None:
        """Start a host in the background, so the call after a killed one finds it warm."""
        if self._spare is None:
            self._spare = asyncio.ensure_future(self._start())

    async def call(self, message: dict[str, Any], emit: Callable[[str, dict[str, Any]], None]) -> dict[str, Any]:
        """Send one call, forward its events, return its answer. A cancel (timeout) kills the host."""
        host = await self._take()
        answered = False
        try:
            assert host.proc.stdin is not None and host.proc.stdout is not None
            host.proc.stdin.write(json.dumps(message, default=str).encode() + b"\n")
            await host.proc.stdin.drain()
            while True:
                line = await host.proc.stdout.readline()
                if not line:
                    raise HostDied("the function's process exited without an answer"
                                   + (f" (exit code {host.proc.returncode})" if host.proc.returncode else ""))
                reply = json.loads(line)
                if "emit" in reply:
                    kind, data = reply["emit"]
                    emit(str(kind), data if isinstance(data, dict) else {"value": data})
                    continue
                answered = True
                return dict(reply)
        finally:
            if answered:
                self._idle.append(host)
            else:
                host.kill()
                self._replace()

    async def aclose(self) -> None:
        hosts, self._idle = self._idle, []
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.cancel()
            with contextlib.suppress(BaseException):
                hosts.append(await spare)
        for host in hosts:
            host.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(host.proc.wait(), timeout=5)
