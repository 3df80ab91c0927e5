"""The tools an API-model agent can call, confined to the unit's directories.

The `openai` and `anthropic` workers give the model the same small toolbox: read, write, list and
search files, and (only when the job allows it) run a command. Every path is resolved against the
unit's workspace and must land, after following symlinks, under one of the unit's allowed roots, so
a model cannot wander out with `../` or a planted symlink. A failing tool never raises into the loop:
its error goes back to the model as an `is_error` tool result, which is what lets the model recover.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_batch.workers.base import UnitContext
from agentic_batch.workers.process import spawn, terminate

READ_LIMIT_CHARS = 100_000
LIST_LIMIT_ENTRIES = 1_000
SEARCH_LIMIT_MATCHES = 200
SEARCH_MAX_FILE_BYTES = 5_000_000
SEARCH_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".mypy_cache"})
OUTPUT_TAIL_CHARS = 10_000
DEFAULT_COMMAND_TIMEOUT = 120.0
#: Environment variables a model-run command must not see (API keys, store URLs with passwords).
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|^ABP_DB_URL$|^DATABASE_URL$", re.IGNORECASE)


class ToolError(Exception):
    """A tool failed in a way the model should be told about (bad path, missing file, ...)."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


ToolHandler = Callable[[dict[str, Any]], Awaitable[ToolResult | str]]


@dataclass(frozen=True)
class Tool:
    """One callable tool: a name, a JSON schema for its input, and an async handler."""

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: ToolHandler

    def openai_format(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.input_schema}}

    def anthropic_format(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class Toolbox:
    """The tools of one unit, by name; `call` turns every failure into an error result."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"duplicate tool name {tool.name!r}")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def openai_tools(self) -> list[dict[str, Any]]:
        return [t.openai_format() for t in self._tools.values()]

    def anthropic_tools(self) -> list[dict[str, Any]]:
        return [t.anthropic_format() for t in self._tools.values()]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(f"unknown tool {name!r}; available: {', '.join(self._tools)}", is_error=True)
        if not isinstance(arguments, dict):
            return ToolResult(f"tool {name!r} expects a JSON object of arguments", is_error=True)
        try:
            result = await tool.handler(arguments)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            return ToolResult(f"{type(exc).__name__}: {exc}", is_error=True)
        return result if isinstance(result, ToolResult) else ToolResult(str(result))


# --- path confinement ----------------------------------------------------------------------------


class PathGuard:
    """Resolves a model-supplied path and refuses anything outside the allowed roots.

    The roots are resolved (realpath: a few stat calls each) at the first tool call, not when the unit
    starts: most units of a wide API job never call a tool, and that cost was ~10% of an executor's CPU.
    """

    def __init__(self, workspace: Path, allowed_dirs: Iterable[Path] = ()) -> None:
        self._given = (workspace, tuple(allowed_dirs))

    @functools.cached_property
    def workspace(self) -> Path:
        return Path(os.path.realpath(self._given[0]))

    @functools.cached_property
    def roots(self) -> list[Path]:
        return list(dict.fromkeys([self.workspace, *(Path(os.path.realpath(d)) for d in self._given[1])]))

    def is_allowed(self, real: str | Path) -> bool:
        real = Path(real)
        return any(real == root or root in real.parents for root in self.roots)

    def resolve(self, path: str, *, for_write: bool = False) -> Path:
        """The real absolute path for `path`; raises ToolError when it escapes the roots."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string")
        given = Path(path).expanduser()
        if ".." in given.parts:
            raise ToolError(f"path {path!r} may not contain '..'")
        candidate = given if given.is_absolute() else self.workspace / given
        real = Path(os.path.realpath(candidate))
        if for_write:  # the parent decides where a new file lands; the target may be a symlink too
            parent = Path(os.path.realpath(candidate.parent))
            if not self.is_allowed(parent):
                raise ToolError(self._refusal(path))
        if not self.is_allowed(real):
            raise ToolError(self._refusal(path))
        return real

    def display(self, real: Path) -> str:
        """How a path is shown to the model: relative to the workspace when inside it."""
        try:
            return str(real.relative_to(self.workspace)) or "."
        except ValueError:
            return str(real)

    def _refusal(self, path: str) -> str:
        roots = ", ".join(str(r) for r in self.roots)
        return f"path {path!r} is outside the allowed directories ({roots})"


# --- the tools -----------------------------------------------------------------------------------


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _tail(text: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters omitted ...]\n" + text[-limit:]


def _command_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}


def builtin_tools(ctx: UnitContext, *, allow_commands: bool = False,
                  command_timeout: float | None = None) -> list[Tool]:
    """The file tools for one unit, plus `run_command` when the job allows commands."""
    guard = PathGuard(ctx.workspace, ctx.allowed_dirs)

    def read_file_sync(args: dict[str, Any]) -> str:
        real = guard.resolve(args.get("path", ""))
        if real.is_dir():
            raise ToolError(f"{args['path']!r} is a directory; use list_dir")
        if not real.exists():
            raise ToolError(f"no such file: {args['path']!r}")
        with open(real, encoding="utf-8", errors="replace") as f:
            text = f.read(READ_LIMIT_CHARS + 1)
        if len(text) > READ_LIMIT_CHARS:
            size = real.stat().st_size
            return text[:READ_LIMIT_CHARS] + f"\n[... truncated: file is {size} bytes; showed the first " \
                                             f"{READ_LIMIT_CHARS} characters ...]"
        return text

    def write_file_sync(args: dict[str, Any]) -> str:
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        real = guard.resolve(args.get("path", ""), for_write=True)
        if real.is_dir():
            raise ToolError(f"{args['path']!r} is a directory")
        real.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8")
        real.write_bytes(data)
        return f"wrote {len(data)} bytes to {guard.display(real)}"

    def list_dir_sync(args: dict[str, Any]) -> str:
        real = guard.resolve(args.get("path") or ".")
        if not real.is_dir():
            raise ToolError(f"not a directory: {args.get('path') or '.'!r}")
        entries = sorted(real.iterdir(), key=lambda p: p.name)
        lines = [p.name + ("/" if p.is_dir() else "") for p in entries[:LIST_LIMIT_ENTRIES]]
        if len(entries) > LIST_LIMIT_ENTRIES:
            lines.append(f"[... {len(entries) - LIST_LIMIT_ENTRIES} more entries ...]")
        return "\n".join(lines) if lines else "(empty directory)"

    def search_files_sync(args: dict[str, Any]) -> str:
        pattern = args.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("pattern must be a non-empty string")
        flags = re.IGNORECASE if args.get("case_insensitive") else 0
        try:
            regex = re.compile(pattern if args.get("regex") else re.escape(pattern), flags)
        except re.error as exc:
            raise ToolError(f"invalid regular expression: {exc}") from None
        root = guard.resolve(args.get("path") or ".")
        glob = args.get("glob")
        files = [root] if root.is_file() else _walk_files(root, glob, guard)
        matches: list[str] = []
        for file in files:
            for number, line in _matching_lines(file, regex):
                matches.append(f"{guard.display(file)}:{number}: {line[:300]}")
                if len(matches) >= SEARCH_LIMIT_MATCHES:
                    return "\n".join(matches) + f"\n[... stopped after {SEARCH_LIMIT_MATCHES} matches ...]"
        return "\n".join(matches) if matches else "no matches"

    async def run_command(args: dict[str, Any]) -> ToolResult:
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ToolError("argv must be a non-empty array of strings (no shell is used)")
        cwd = guard.resolve(args["cwd"]) if args.get("cwd") else guard.workspace
        cap = command_timeout or DEFAULT_COMMAND_TIMEOUT
        limit = max(0.1, min(float(args.get("timeout") or cap), cap))
        try:
            proc = await spawn(argv, cwd=cwd, env=_command_env(), tracker=ctx.processes)
        except FileNotFoundError:
            raise ToolError(f"command not found: {argv[0]!r}") from None
        except PermissionError:
            raise ToolError(f"command not executable: {argv[0]!r}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=limit)
        except TimeoutError:
            return ToolResult(f"command timed out after {limit:g}s and was killed", is_error=True)
        finally:
            await terminate(proc, ctx.processes)  # also reaps anything it left running in its group
        code = proc.returncode
        text = (f"exit code: {code}\nstdout:\n{_tail(out.decode('utf-8', 'replace'))}\n"
                f"stderr:\n{_tail(err.decode('utf-8', 'replace'))}")
        return ToolResult(text, is_error=code != 0)

    def threaded(fn: Callable[[dict[str, Any]], str]) -> ToolHandler:
        async def handler(args: dict[str, Any]) -> str:
            return await asyncio.to_thread(fn, args)
        return handler

    path_prop = {"type": "string", "description": "Path relative to the working directory, or absolute."}
    tools = [
        Tool("read_file", "Read a UTF-8 text file.", _schema({"path": path_prop}, ["path"]),
             threaded(read_file_sync)),
        Tool("write_file", "Create or overwrite a text file (parent directories are created).",
             _schema({"path": path_prop, "content": {"type": "string"}}, ["path", "content"]),
             threaded(write_file_sync)),
        Tool("list_dir", "List a directory; directories end with '/'.",
             _schema({"path": dict(path_prop, default=".")}, []), threaded(list_dir_sync)),
        Tool("search_files",
             "Search text files under a directory for a substring (or a regex with regex=true); "
             "returns path:line: text for each match.",
             _schema({"pattern": {"type": "string"},
                      "path": dict(path_prop, default="."),
                      "regex": {"type": "boolean", "default": False},
                      "glob": {"type": "string", "description": "Only file names matching, e.g. *.py"},
                      "case_insensitive": {"type": "boolean", "default": False}}, ["pattern"]),
             threaded(search_files_sync)),
    ]
    if allow_commands:
        tools.append(Tool(
            "run_command",
            "Run a program (argv list, no shell: no pipes, globs or redirection) in the working directory; "
            "returns its exit code and the tail of stdout/stderr.",
            _schema({"argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                     "cwd": path_prop,
                     "timeout": {"type": "number", "description": "Seconds before the command is killed."}},
                    ["argv"]),
            run_command,
        ))
    return tools


def _walk_files(root: Path, glob: str | None, guard: PathGuard) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow directory symlinks
        dirnames[:] = sorted(d for d in dirnames if d not in SEARCH_SKIP_DIRS)
        for name in sorted(filenames):
            if glob and not fnmatch.fnmatch(name, glob):
                continue
            path = Path(dirpath) / name
            if guard.is_allowed(os.path.realpath(path)):  # a file symlink may point outside
                yield path


def _matching_lines(path: Path, regex: re.Pattern[str]) -> Iterable[tuple[int, str]]:
    try:
        if path.stat().st_size > SEARCH_MAX_FILE_BYTES:
            return
        with open(path, "rb") as f:
            if b"\0" in f.read(8192):
                return  # binary
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if regex.search(line):
                    yield number, line.rstrip("\n")
    except OSError:
        return
