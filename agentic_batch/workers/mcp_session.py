"""One MCP server session shared by every unit an executor runs (the `mcp` worker's connection).

Starting a server per unit (as the API workers' tool loops do) would cost a process start and an
`initialize` per item; a batch of 10,000 small tool calls wants one session. So the session belongs
to the worker, which lives as long as the executor's run: it is opened by the first unit that needs
it, shared by all (at most `max_calls` calls in flight), opened anew when the server has died, and
closed (a stdio server's process group killed) when the worker is closed.

The SDK's `ClientSession` runs in anyio task groups that must be entered and left by one task, so
each session is owned by a task of its own (`_Generation`); units only send requests through it. A
unit's timeout cancels its request (the SDK tells the server), never the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from agentic_batch.workers.base import ProcessTracker, UnitContext
from agentic_batch.workers.mcp_connect import MCPServerConfig, OpenSession, describe_error, open_session, unwrap_group
from agentic_batch.workers.process import SharedProcesses

log = logging.getLogger(__name__)


class ServerGone(Exception):
    """The server's connection ended during a call (it died, or the network did): retry the unit."""


class _Generation:
    """One start of a server and its session, owned by one task until `stop` is set or it dies."""

    def __init__(self, server: MCPServerConfig, tracker: ProcessTracker, cwd: Path | None) -> None:
        self.server = server
        self.ready: asyncio.Future[OpenSession] = asyncio.get_running_loop().create_future()
        # a start that failed while no unit waited must not be logged as "never retrieved"
        self.ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        self.stop = asyncio.Event()
        self.dead = False
        self.task = asyncio.create_task(self._own(tracker, cwd), name=f"mcp-session-{server.name}")

    async def _own(self, tracker: ProcessTracker, cwd: Path | None) -> None:
        raised: list[BaseException] = []
        try:
            async with AsyncExitStack() as stack:
                try:
                    # no read timeout of its own: each unit's --timeout bounds its call
                    opened = await open_session(self.server, stack, tracker=tracker, cwd=cwd, read_timeout=None)
                    self.ready.set_result(opened)
                    await self.stop.wait()
                except BaseException as exc:
                    raised.append(exc)
                    raise
        except BaseException as exc:
            real = unwrap_group(exc, raised) if isinstance(exc, BaseExceptionGroup) else exc
            if not self.ready.done():
                self.ready.set_exception(real if isinstance(real, Exception) else ServerGone(describe_error(real)))
            elif not isinstance(real, asyncio.CancelledError):
                log.warning("MCP server %r session ended: %s", self.server.name, describe_error(real))
            if isinstance(exc, asyncio.CancelledError):
                raise  # the loop is shutting down: the stack above has stopped the server
        finally:
            self.dead = True
            if not self.ready.done():
                self.ready.set_exception(ServerGone(f"MCP server {self.server.name!r} stopped before it started"))

    def usable(self) -> bool:
        if self.dead or self.stop.is_set():
            return False
        if not self.ready.done():
            return True  # starting: wait for it
        return self.ready.exception() is None and not self.ready.result().server_exited()

    def lost(self) -> None:
        """The connection failed under a call: stop this generation (the next call starts another)."""
        self.stop.set()

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(BaseException):
            await self.task


class SharedSession:
    """A server's session for all of an executor's units: started on first use, restarted after the
    server died, at most `max_calls` requests in flight."""

    def __init__(self, server: MCPServerConfig, max_calls: int) -> None:
        self.server = server
        self.max_calls = max_calls
        self._calls: asyncio.Semaphore | None = None
        self._lock: asyncio.Lock | None = None
        self._current: _Generation | None = None
        self._generations: list[_Generation] = []
        #: Used when the executor gives no tracker of its own (a worker outside an executor).
        self._own_tracker = SharedProcesses()
        #: How many times the server was started (1 unless it died).
        self.starts = 0

    async def call(self, tool: str, arguments: dict[str, Any], ctx: UnitContext) -> Any:
        """`tools/call` through the shared session. Raises MCPStartError (cannot start), ServerGone
        (the connection ended during the call) or the SDK's MCPError (the server answered an error)."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        if self._calls is None:
            self._calls = asyncio.Semaphore(self.max_calls)
        async with self._calls:
            generation = await self._started(ctx)
            opened = await asyncio.shield(generation.ready)
            try:
                return await opened.session.call_tool(tool, arguments)
            except MCPError as exc:
                if exc.error.code != CONNECTION_CLOSED:
                    raise
                generation.lost()
                raise ServerGone(f"MCP server {self.server.name!r} closed the connection during the call") from None
            except (ValueError, RuntimeError):  # a result the SDK refused (pydantic's ValidationError, an
                raise                               # input request): the session itself is fine
            except Exception as exc:  # the transport failed (a closed stream, a refused connection): start anew
                generation.lost()
                raise ServerGone(f"MCP server {self.server.name!r} is gone: {describe_error(exc)}") from None

    async def _started(self, ctx: UnitContext) -> _Generation:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self._current
            if current is None or not current.usable():
                if current is not None:
                    current.stop.set()
                    ctx.emit("warning", {"message": f"MCP server {self.server.name!r} is gone; starting it again"})
                tracker = ctx.shared_processes or self._own_tracker
                cwd = Path(self.server.cwd) if self.server.cwd else ctx.workdir
                current = self._current = _Generation(self.server, tracker, cwd)
                self._generations.append(current)
                self.starts += 1
            self._generations = [g for g in self._generations if g is current or not g.task.done()]
            return current

    async def aclose(self) -> None:
        """Stop every session (a stdio server gets end of input, then its group is killed)."""
        generations, self._generations, self._current = self._generations, [], None
        await asyncio.gather(*(g.close() for g in generations), return_exceptions=True)
        self._own_tracker.kill_all()
