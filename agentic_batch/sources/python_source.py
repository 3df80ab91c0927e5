"""A `python` source: a user function that returns or yields the item dicts.

`options.function` is `module:function` (imported with the working directory and `options.root` on
`sys.path`) or `path/to/file.py:function`. The function is called with `options.args` as keyword
arguments (strings). It may return a list/iterable, be a generator, an async generator (driven on a
private event loop, one item at a time, so it still streams) or a coroutine returning a list (run
with `asyncio.run`). Async ones need a thread without a running loop: call `iter_items` from
`asyncio.to_thread` in async code.

The extra `sys.path` entries stay while the items are read, because generators often import lazily.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.errors import SourceError
from agentic_batch.flags import SOURCE_PANEL, Flag
from agentic_batch.importing import describe as _describe
from agentic_batch.importing import find_file, get_function, import_module, load_file, on_sys_path, split_ref
from agentic_batch.sources.kind import RawItem, SourceKind, absolute
from agentic_batch.sources.reading import to_jsonable


class PythonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: Annotated[str, Flag(SOURCE_PANEL, name="--python", help="module:function (or file.py:function) "
                                                                      "returning or yielding dicts.")] = Field(
        description="module:function or /path/to/file.py:function that returns or yields dicts")
    args: Annotated[dict[str, str], Flag(SOURCE_PANEL, name="--source-arg", metavar="<k=v>",
                                         help="k=v keyword argument for --python (repeatable).")] = Field(
        default_factory=dict, description="keyword arguments (strings) passed to the python source function")
    #: Not a flag: on the command line the function is found from the current directory.
    root: str | None = Field(default=None, description="directory put on sys.path to import the function from "
                                                       "(besides the job's workdir)")


def iter_python(options: PythonOptions, cwd: Path) -> Iterator[RawItem]:
    """Import the function, call it, and yield its items checked to be JSON-able dicts."""
    target = options.function
    module_ref, func_name, is_file = split_ref(target, "python source", SourceError)
    dirs = [Path(options.root)] if options.root else []
    dirs.append(cwd)
    file_path = find_file(module_ref, dirs, "python source", target, SourceError) if is_file else None
    search = [str(d) for d in dirs] + ([str(file_path.parent)] if file_path else [])
    # the extra sys.path entries stay while the items are read: generators often import lazily
    with on_sys_path(search):
        if file_path:
            module = load_file(file_path, "python source", SourceError)
        else:
            module = import_module(module_ref, "python source", SourceError)
        func = get_function(module, module_ref, func_name, "python source", SourceError)
        yield from _items(func, options.args, target)


def _raised(target: str, exc: BaseException) -> SourceError:
    return SourceError(f"python source {target} raised {_describe(exc)}", hint="fix the function")


def _items(func: Callable[..., Any], args: dict[str, str], target: str) -> Iterator[RawItem]:
    try:
        result = func(**args)
        items = _as_iterator(result, target)
    except SourceError:
        raise
    except Exception as exc:
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
        except Exception as exc:
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


def _describe_call(options: PythonOptions) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in options.args.items())
    return f"python {options.function}" + (f"({args})" if args else "")


KIND = SourceKind(
    name="python", items="one item per dict the function returns or yields", options_model=PythonOptions,
    iterate=iter_python, describe=_describe_call,
    resolve=lambda o, cwd: o.model_copy(update={"root": absolute(o.root, cwd)}) if o.root else o,
)
