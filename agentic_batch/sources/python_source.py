"""A `python` source: a user function that returns or yields the item dicts.

`spec.function` is `module:function` (imported with the working directory and `spec.root` on
`sys.path`) or `path/to/file.py:function`. The function is called with `spec.args` as keyword
arguments (strings). It may return a list/iterable, be a generator, an async generator (driven on a
private event loop, one item at a time, so it still streams) or a coroutine returning a list (run
with `asyncio.run`). Async ones need a thread without a running loop: call `iter_items` from
`asyncio.to_thread` in async code.

The extra `sys.path` entries stay while the items are read, because generators often import lazily.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from agentic_batch.errors import SourceError
from agentic_batch.sources.base import RawItem, to_jsonable
from agentic_batch.spec import SourceSpec

_FORM_HINT = "give module:function (importable from the working directory) or path/to/file.py:function"


def iter_python(spec: SourceSpec, cwd: Path) -> Iterator[RawItem]:
    """Import the function, call it, and yield its items checked to be JSON-able dicts."""
    target = spec.function or ""
    module_ref, _, func_name = target.rpartition(":")
    if not module_ref or not func_name:
        raise SourceError(f"python source {target!r} is not module:function", hint=_FORM_HINT)
    is_file = module_ref.endswith(".py") or "/" in module_ref or os.sep in module_ref
    file_path = _find_file(module_ref, cwd, spec.root, target) if is_file else None
    search = [str(cwd)] + ([spec.root] if spec.root else [])
    if file_path is not None:
        search.insert(0, str(file_path.parent))
    with _on_sys_path(search):
        module = _load_file(file_path, target) if file_path else _import_module(module_ref)
        func = _get_function(module, module_ref, func_name)
        yield from _items(func, spec.args, target)


@contextmanager
def _on_sys_path(entries: list[str]) -> Iterator[None]:
    """Prepend the entries not already there; remove exactly those afterwards."""
    added = [entry for entry in dict.fromkeys(entries) if entry not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def _find_file(module_ref: str, cwd: Path, root: str | None, target: str) -> Path:
    path = Path(module_ref).expanduser()
    candidates = [path] if path.is_absolute() else [Path(base, path) for base in (root, cwd) if base]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise SourceError(f"python source file for {target!r} not found (looked at {looked})", hint=_FORM_HINT)


def _load_file(path: Path, target: str) -> ModuleType:
    """Execute a .py file as a fresh module, registered in sys.modules as pickling and dataclasses need."""
    name = "_abp_source_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py suffixes
        raise SourceError(f"cannot load {path} as Python for {target!r}", hint=_FORM_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        sys.modules.pop(name, None)
        raise SourceError(f"importing {path} raised {_describe(exc)}") from None
    return module


def _import_module(name: str) -> ModuleType:
    importlib.invalidate_caches()  # the module may have been written after the last import
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise SourceError(
                f"no python module named {name!r} (looked in the working directory and sys.path)",
                hint=_FORM_HINT,
            ) from None
        raise SourceError(
            f"importing module {name!r} failed: {exc}", hint="install what it imports"
        ) from None
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise SourceError(f"importing module {name!r} raised {_describe(exc)}") from None


def _get_function(module: ModuleType, module_ref: str, func_name: str) -> Callable[..., Any]:
    """`func_name` may be dotted (`Class.method`) for a staticmethod or classmethod."""
    obj: Any = module
    for part in func_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SourceError(
                f"python module {module_ref!r} has no function {func_name!r}",
                hint="check the name after the ':'",
            )
    if not callable(obj):
        raise SourceError(f"{module_ref}:{func_name} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def _raised(target: str, exc: BaseException) -> SourceError:
    return SourceError(f"python source {target} raised {_describe(exc)}", hint="fix the function")


def _items(func: Callable[..., Any], args: dict[str, str], target: str) -> Iterator[RawItem]:
    try:
        result = func(**args)
        items = _as_iterator(result, target)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise _raised(target, exc) from None
    try:
        yield from _checked(items, target)
    finally:
        close = getattr(items, "close", None)
        if callable(close):
            close()  # run the user generator's cleanup now, not at garbage collection


def _checked(items: Iterator[Any], target: str) -> Iterator[RawItem]:
    """Each item must be a dict of JSON-able values; errors inside the user's code name the source."""
    index = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise _raised(target, exc) from None
        where = f"item [{index}] from {target}"
        if not isinstance(item, dict):
            raise SourceError(
                f"{where} is a {type(item).__name__}, not a dict", hint="return or yield one dict per item"
            )
        try:
            payload = to_jsonable(item, strict=True)
        except TypeError as exc:
            raise SourceError(
                f"{where} is not JSON-able: {exc}", hint="use str, numbers, lists and dicts"
            ) from None
        yield where, payload
        index += 1


def _as_iterator(result: Any, target: str) -> Iterator[Any]:
    """Whatever the function gave back, as a plain iterator of items."""
    if inspect.isasyncgen(result):
        _require_no_running_loop(target, result)
        return _drive_async_generator(result)
    if inspect.isawaitable(result):
        _require_no_running_loop(target, result)
        result = asyncio.run(_await(result))
    if result is None or isinstance(result, (dict, str, bytes)) or not isinstance(result, Iterable):
        raise SourceError(
            f"python source {target} returned {'None' if result is None else type(result).__name__}, "
            "not an iterable of dicts",
            hint="return a list of dicts or yield dicts",
        )
    return iter(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _require_no_running_loop(target: str, result: Any) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    close = getattr(result, "close", None)
    if callable(close) and not inspect.isasyncgen(result):
        close()  # no "coroutine was never awaited" warning
    raise SourceError(
        f"python source {target} is async and an event loop is already running in this thread",
        hint="read the source from a worker thread, e.g. await asyncio.to_thread(list, iter_items(spec))",
    )


def _drive_async_generator(agen: Any) -> Iterator[Any]:
    """Pull items one by one on a private loop, so an async source streams like a sync one."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        try:
            loop.run_until_complete(agen.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
