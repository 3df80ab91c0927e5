"""The `mcp` worker: each unit is one `tools/call` of one MCP tool, its arguments rendered per item.

`--worker mcp --mcp-config servers.json --tool files.read_text_file --arguments '{"path": "{{ path }}"}'`.
The arguments are a JSON object whose string values are templates (keys and other values are kept as
given); a value that is exactly one `{{ expression }}` keeps the expression's JSON type, so `"{{ n }}"`
sends the number 3, not "3" (`prompts.render_value`). At create time the server is started once, the
tool looked up and the arguments rendered for the first items and checked against the tool's input
schema, so a misspelt tool or a missing argument fails before a job exists.

A unit's result: the tool's text content is the output and its `structuredContent` the data. A
result with `isError` fails the unit for good (the tool said no; calling again says no again); a
connection that ends under a call (the server died) is retryable, and the server is started anew for
the next call. Sessions are shared by the executor's units (`mcp_session`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentic_batch.errors import AbpError, InvalidSpec, field_ref
from agentic_batch.prompts import compile_template, render_value
from agentic_batch.workers.base import ErrorClass, FailureKind, UnitContext, UnitOutcome, WorkerKind
from agentic_batch.workers.mcp_connect import (
    MCPServerConfig,
    MCPStartError,
    content_text,
    describe_error,
    load_mcp_config,
    open_session,
)
from agentic_batch.workers.mcp_session import ServerGone, SharedSession
from agentic_batch.workers.process import SharedProcesses
from agentic_batch.workers.tool_loop import truncate

_TOOL, _ARGUMENTS, _CONFIG = "worker_options.tool", "worker_options.arguments", "worker_options.mcp_config"
#: JSON-RPC error codes that mean the request itself is wrong (sending it again fails again).
_BAD_REQUEST_CODES = frozenset({-32700, -32600, -32601, -32602})
_ERROR_TEXT = 2000


class MCPCallOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mcp_config: str = Field(description="JSON file with {\"mcpServers\": {...}} (stdio or streamable-HTTP servers)")
    tool: str = Field(description="the tool each unit calls, as SERVER.TOOL (a server of mcp_config, a dot, "
                                  "one of its tools), e.g. files.read_text_file")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="the tool's arguments: a JSON object whose string values are templates over the item, "
                    "e.g. {\"path\": \"{{ path }}\", \"n\": 3}; a value that is one {{ expression }} keeps its type")
    max_concurrent_calls: int = Field(8, ge=1, le=1000, description="tools/call requests in flight per server "
                                                                    "at once (all of an executor's units share "
                                                                    "one session per server)")

    @field_validator("mcp_config")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """Made absolute at create time: the executor runs later, maybe from another directory."""
        return str(Path(value).expanduser().absolute())

    @field_validator("tool")
    @classmethod
    def _server_dot_tool(cls, value: str) -> str:
        server, dot, tool = value.partition(".")
        if not (server and dot and tool):
            raise ValueError(f"{value!r} is not SERVER.TOOL (a server of the MCP config, a dot, one of its tools)")
        return value

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """The CLI gives JSON text; REST and MCP may give the object itself."""
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"must be a JSON object of the tool's arguments, not {type(value).__name__}")
        return value


def resolve_tool(options: MCPCallOptions) -> tuple[MCPServerConfig, str]:
    """The configured server `options.tool` names and the tool's name on it. A server name may hold
    dots too: the longest server name that prefixes SERVER.TOOL wins."""
    servers = load_mcp_config(options.mcp_config)
    matches = [s for s in servers if options.tool.startswith(s.name + ".") and len(options.tool) > len(s.name) + 1]
    if not matches:
        names = ", ".join(s.name for s in servers) or "none"
        raise InvalidSpec(f"{field_ref(_TOOL)} {options.tool!r}: {field_ref(_CONFIG)} has no server "
                          f"{options.tool.partition('.')[0]!r} (servers: {names})")
    server = max(matches, key=lambda s: len(s.name))
    return server, options.tool[len(server.name) + 1:]


def _templates(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string inside the arguments, with its path (`path`, `options.depth`, `files[0]`)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [t for key, inner in value.items() for t in _templates(inner, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [t for index, inner in enumerate(value) for t in _templates(inner, f"{path}[{index}]")]
    return []


def render_arguments(arguments: Any, payload: dict[str, Any], variables: dict[str, Any], path: str = "",
                     item: str = "") -> Any:
    """The arguments for one item: each string rendered (typed when it is one expression); `item` says
    which item in an error (create time)."""
    if isinstance(arguments, str):
        return render_value(arguments, payload, what=f"{field_ref(_ARGUMENTS)} value {path!r}{item}", **variables)
    if isinstance(arguments, dict):
        return {key: render_arguments(inner, payload, variables, f"{path}.{key}" if path else str(key), item)
                for key, inner in arguments.items()}
    if isinstance(arguments, list):
        return [render_arguments(inner, payload, variables, f"{path}[{i}]", item) for i, inner in enumerate(arguments)]
    return arguments


def _check(options: Any, _prompt: str | None, _workdir: Path) -> None:
    """Without items: the config parses, the tool names a server, every template compiles."""
    resolve_tool(options)
    for path, template in _templates(options.arguments):
        compile_template(template, what=f"{field_ref(_ARGUMENTS)} value {path!r}")


def _sample_check(options: Any, payloads: list[dict[str, Any]], prompts: list[str | None], workdir: Path) -> None:
    """Render the arguments for the first items and check them against the tool's input schema, as
    the server lists it (the server is started here once, in the job's directory, then stopped)."""
    opts: MCPCallOptions = options
    server, tool = resolve_tool(opts)
    samples: list[dict[str, Any]] = []
    for index, payload in enumerate(payloads):
        variables = {"prompt": prompts[index] if index < len(prompts) else None,
                     "unit": {"id": 0, "key": "", "seq": index, "attempt": 1}, "job": {"id": 0, "name": ""}}
        samples.append(render_arguments(opts.arguments, payload, variables, item=f" (item #{index})"))
    listed = {t.name: t for t in _list_tools_now(server, workdir, f"{field_ref(_TOOL)} {opts.tool!r}")}
    if tool not in listed:
        names = ", ".join(sorted(listed)) or "none"
        raise InvalidSpec(f"{field_ref(_TOOL)} {opts.tool!r}: server {server.name!r} has no tool {tool!r} "
                          f"(it has: {names})")
    schema = listed[tool].input_schema or {"type": "object"}
    for index, arguments in enumerate(samples):
        problem = _schema_problem(schema, arguments)
        if problem:
            raise InvalidSpec(f"{field_ref(_ARGUMENTS)} for item #{index} do not match the input schema of "
                              f"{opts.tool}: {problem}", hint=f"the tool takes: {_describe_schema(schema)}")


def _list_tools_now(server: MCPServerConfig, workdir: Path, what: str) -> list[Any]:
    """List a server's tools from synchronous code (creation may run inside a server's event loop, so
    in a thread with a loop of its own); a server that cannot start is one InvalidSpec."""
    async def listing() -> list[Any]:
        tracker = SharedProcesses()
        try:
            async with AsyncExitStack() as stack:
                opened = await open_session(server, stack, tracker=tracker,
                                            cwd=Path(server.cwd) if server.cwd else workdir)
                return opened.tools
        finally:
            tracker.kill_all()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="abp-mcp-list") as pool:
        try:
            return pool.submit(asyncio.run, listing()).result()
        except MCPStartError as exc:
            first, _, rest = exc.message.partition("\n")
            last = rest.strip().splitlines()[-1] if rest.strip() else None
            raise InvalidSpec(f"{what}: {first}", hint=last) from None
        except Exception as exc:  # an exception group from the SDK, a refused connection
            raise InvalidSpec(f"{what}: cannot list the tools of MCP server {server.name!r}: "
                              f"{describe_error(exc)}") from None


def _schema_problem(schema: dict[str, Any], instance: Any) -> str | None:
    import jsonschema
    from jsonschema.exceptions import best_match

    try:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
        error = best_match(validator.iter_errors(instance))
    except jsonschema.SchemaError as exc:
        return f"the tool's input schema is not valid JSON Schema ({exc.message})"
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _describe_schema(schema: dict[str, Any]) -> str:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parts = [f"{name}{'' if name in required else '?'}: {spec.get('type', 'any') if isinstance(spec, dict) else 'any'}"
             for name, spec in properties.items()]
    return "{" + ", ".join(parts) + "}" if parts else "no arguments"


class MCPCallWorker:
    kind = "mcp"

    def __init__(self, options: MCPCallOptions) -> None:
        self.options = options
        server, self.tool = resolve_tool(options)
        self.session = SharedSession(server, options.max_concurrent_calls)

    async def run(self, ctx: UnitContext) -> UnitOutcome:
        try:
            arguments = render_arguments(self.options.arguments, ctx.payload, ctx.template_vars)
        except AbpError as exc:
            return UnitOutcome.failure(exc.one_line(), ErrorClass.permanent, FailureKind.prompt)
        # the tool loop's event kinds, so `abp show` and the dashboard render the call as they do an agent's
        ctx.emit("tool_use", {"name": self.options.tool, "input": arguments})
        try:
            result = await self.session.call(self.tool, arguments, ctx)
        except MCPStartError as exc:
            return UnitOutcome.failure(exc.message, exc.error_class, FailureKind.setup)
        except ServerGone as exc:
            return UnitOutcome.failure(str(exc), ErrorClass.retryable, FailureKind.connection)
        except Exception as exc:
            return _call_failure(self.options.tool, exc)
        text = content_text(result)
        data = result.structured_content
        ctx.emit("tool_result", {"content": truncate(text), "is_error": bool(result.is_error)})
        if result.is_error:
            return UnitOutcome.failure(f"{self.options.tool} returned an error: {text[:_ERROR_TEXT] or '(no text)'}",
                                       ErrorClass.permanent, FailureKind.tool_error, output=text or None, data=data)
        return UnitOutcome(output=text, data=data)

    async def aclose(self) -> None:
        """Stop the server (the engine calls it when the executor's run ends)."""
        await self.session.aclose()


def _call_failure(tool: str, exc: Exception) -> UnitOutcome:
    """An error the server answered (JSON-RPC) or a result the SDK refused."""
    from mcp import MCPError
    from pydantic import ValidationError

    if isinstance(exc, MCPError):
        if exc.error.code in _BAD_REQUEST_CODES:
            return UnitOutcome.failure(f"{tool}: the server refused the call: {exc.error.message}",
                                       ErrorClass.permanent, FailureKind.bad_request)
        return UnitOutcome.failure(f"{tool}: server error {exc.error.code}: {exc.error.message}",
                                   ErrorClass.retryable, FailureKind.server_error)
    if isinstance(exc, ValidationError | ValueError | RuntimeError):
        return UnitOutcome.failure(f"{tool}: the server's answer is not a valid tool result: {describe_error(exc)}",
                                   ErrorClass.permanent, FailureKind.malformed_response)
    return UnitOutcome.failure(f"{tool}: {describe_error(exc)}", ErrorClass.retryable, FailureKind.connection)


KIND = WorkerKind(
    kind="mcp",
    summary="call one MCP tool per item (arguments rendered from the item); text is the output, "
            "structuredContent the data",
    options_model=MCPCallOptions,
    factory=lambda options: MCPCallWorker(options),
    prompt_required=False,
    isolatable=False,
    check=_check,
    sample_check=_sample_check,
)
