"""Connecting to the MCP servers of an `--mcp-config`: the config, the stdio and HTTP transports, and an
initialised `ClientSession` with its tools listed.

Shared by the API workers' tool loops (`mcp_tools`: servers per unit) and the `mcp` worker
(`mcp_call`: one session per server per executor). The config is the format Claude Code and most MCP
clients use: `{"mcpServers": {"name": {"command": ..., "args": [...], "env": {...}}}}` for stdio
servers, or `{"url": ..., "headers": {...}}` for streamable-HTTP ones. Sessions use the official
`mcp` SDK `ClientSession`; stdio servers are started with `workers.process.spawn` (their own process
group, registered with the caller's tracker, dying with the executor) instead of the SDK's
`stdio_client`, which offers no hook for either.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentic_batch.errors import InvalidSpec, field_ref
from agentic_batch.workers.base import ErrorClass, ProcessTracker
from agentic_batch.workers.process import spawn, terminate

STARTUP_TIMEOUT = 30.0
SHUTDOWN_GRACE = 1.0


@dataclass(frozen=True)
class MCPServerConfig:
    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class MCPStartError(Exception):
    """An MCP server could not be started or initialised; carries the engine's error class."""

    def __init__(self, message: str, error_class: ErrorClass) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class


@dataclass
class OpenSession:
    """An initialised session, the tools its server lists, and (stdio) the server's process."""

    session: Any
    tools: list[Any]
    process: asyncio.subprocess.Process | None = None

    def server_exited(self) -> bool:
        """True once a stdio server's process is gone (an HTTP server's state is known by calling it)."""
        return self.process is not None and self.process.returncode is not None


def load_mcp_config(path: str | Path) -> list[MCPServerConfig]:
    """Parse and check an MCP config file; raises InvalidSpec with the reason."""
    path = Path(path).expanduser()
    config = field_ref("worker_options.mcp_config")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidSpec(f"{config} {str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InvalidSpec(f"{config} {str(path)!r} is not readable JSON: {exc}") from None
    servers = raw.get("mcpServers") if isinstance(raw, dict) else None
    if not isinstance(servers, dict):
        raise InvalidSpec(f"{config} {str(path)!r} needs an object \"mcpServers\": {{name: server}}")
    configs: list[MCPServerConfig] = []
    for name, spec in servers.items():
        where = f"{config} server {name!r}"
        if not isinstance(spec, dict):
            raise InvalidSpec(f"{where} must be an object")
        kind = spec.get("type", "http" if "url" in spec else "stdio")
        if kind == "stdio":
            command, args, env = spec.get("command"), spec.get("args", []), spec.get("env", {})
            if not isinstance(command, str) or not command:
                raise InvalidSpec(f"{where} needs a \"command\" (a program, not a shell line)")
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise InvalidSpec(f"{where}: \"args\" must be a list of strings")
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise InvalidSpec(f"{where}: \"env\" must map names to strings")
            configs.append(MCPServerConfig(name, command=command, args=list(args), env=dict(env),
                                           cwd=spec.get("cwd")))
        elif kind in ("http", "streamable-http", "streamable_http"):
            url, headers = spec.get("url"), spec.get("headers", {})
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise InvalidSpec(f"{where} needs an http(s) \"url\"")
            if not isinstance(headers, dict):
                raise InvalidSpec(f"{where}: \"headers\" must be an object")
            configs.append(MCPServerConfig(name, url=url, headers={k: str(v) for k, v in headers.items()}))
        else:
            raise InvalidSpec(f"{where}: unsupported type {kind!r} (use stdio or http)")
    return configs


def unwrap_group(group: BaseExceptionGroup, raised: list[BaseException]) -> BaseException:
    """The real exception inside the SDK's task-group wrapping: an MCPStartError, else one the caller
    raised itself (`raised`), else the only one."""
    leaves: list[BaseException] = []

    def flatten(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                flatten(inner)
        else:
            leaves.append(exc)

    flatten(group)
    for leaf in leaves:
        if isinstance(leaf, MCPStartError) or leaf in raised:
            return leaf
    return leaves[0] if len(leaves) == 1 else group


async def open_session(server: MCPServerConfig, stack: AsyncExitStack, *, tracker: ProcessTracker,
                       cwd: Path | None, read_timeout: float | None = 300.0) -> OpenSession:
    """Connect, initialise and list tools; any failure becomes one MCPStartError with stderr's tail.
    Everything opened is closed by `stack` (a stdio server's process group killed). `read_timeout`
    bounds a wait for an HTTP server's answer (None: no bound but the caller's)."""
    import anyio
    from mcp import ClientSession

    stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
    process: list[asyncio.subprocess.Process] = []
    try:
        if server.url:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=server.headers, timeout=httpx2.Timeout(30.0, read=read_timeout)))
            read, write = await stack.enter_async_context(streamable_http_client(server.url, http_client=client))
        else:
            read, write = await stack.enter_async_context(_tracked_stdio(server, tracker, cwd, stderr_tail, process))
        session = await stack.enter_async_context(ClientSession(read, write))
        with anyio.fail_after(STARTUP_TIMEOUT):
            await session.initialize()
            return OpenSession(session, await _list_tools(session), process[0] if process else None)
    except MCPStartError:
        raise
    except Exception as exc:  # any startup failure is reported as one error
        await anyio.sleep(0.1)  # let the stderr pump catch the server's last words
        tail = "\n".join(stderr_tail)
        raise MCPStartError(f"MCP server {server.name!r} failed to start: {describe_error(exc)}"
                            + (f"\nserver stderr:\n{tail}" if tail else ""), ErrorClass.retryable) from exc


async def _list_tools(session: Any) -> list[Any]:
    from mcp import types

    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(100):  # pages
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


def content_text(result: Any) -> str:
    """The text of a CallToolResult; non-text blocks become short placeholders."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource link {block.uri}]")
        else:
            parts.append(f"[{kind or 'unknown'} content: {getattr(block, 'mime_type', '')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return describe_error(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def _tracked_stdio(server: MCPServerConfig, tracker: ProcessTracker, cwd: Path | None,
                         stderr_tail: collections.deque[str],
                         started: list[asyncio.subprocess.Process]) -> AsyncIterator[tuple[Any, Any]]:
    """A stdio transport for `ClientSession`: newline-delimited JSON-RPC over the server's pipes."""
    import anyio
    import mcp_types
    from mcp.client.stdio import get_default_environment
    from mcp.shared.message import SessionMessage

    assert server.command is not None
    try:
        proc = await spawn([server.command, *server.args], cwd=cwd,
                           env=get_default_environment() | server.env, tracker=tracker,
                           stdin=asyncio.subprocess.PIPE, limit=64 * 2**20)
    except OSError as exc:
        raise MCPStartError(f"cannot start MCP server {server.name!r} ({server.command}): {exc}",
                            ErrorClass.permanent) from None
    started.append(proc)
    assert proc.stdin and proc.stdout and proc.stderr
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    read_send, read_recv = anyio.create_memory_object_stream[Any](0)
    write_send, write_recv = anyio.create_memory_object_stream[Any](0)

    async def pump_stdout() -> None:
        async with read_send:
            while line := await stdout.readline():
                text = line.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    item: Any = SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(text,
                                                                                              by_name=False))
                except ValueError as exc:
                    item = exc
                try:
                    await read_send.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    async def pump_stdin() -> None:
        try:
            async with write_recv:
                async for message in write_recv:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    stdin.write(data.encode("utf-8"))
                    await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await read_send.aclose()  # the server died: let the session see the end

    async def pump_stderr() -> None:
        while line := await stderr.readline():
            stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    pumps = [asyncio.create_task(pump()) for pump in (pump_stdout, pump_stdin, pump_stderr)]
    try:
        yield read_recv, write_send
    finally:
        with anyio.CancelScope(shield=True):
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            stdin.close()  # the polite stop: a stdio server exits at end of input
            with anyio.move_on_after(SHUTDOWN_GRACE):
                await proc.wait()
            await terminate(proc, tracker)
            await read_send.aclose()
            await write_recv.aclose()
