"""Resolving `module:function` and `path/to/file.py:function` references to callables.

Shared by the python source (`--python`) and the python worker (`--function`) so both accept the
same forms and fail with the same words. Lookups happen with the job's directory on sys.path,
because the executor runs later, from another process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from agentic_batch.errors import AbpError, InvalidSpec

FORM_HINT = "give module:function (importable from the working directory) or path/to/file.py:function"


@contextlib.contextmanager
def on_sys_path(entries: list[str]) -> Iterator[None]:
    """Prepend the entries not already there; remove exactly those afterwards."""
    added = [entry for entry in dict.fromkeys(entries) if entry and entry not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def describe(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def split_ref(ref: str, what: str, error: type[AbpError] = InvalidSpec) -> tuple[str, str, bool]:
    """(module or file, function name, is a file path)."""
    module_ref, _, func_name = ref.rpartition(":")
    if not module_ref or not func_name:
        raise error(f"{what} {ref!r} is not module:function", hint=FORM_HINT)
    is_file = module_ref.endswith(".py") or "/" in module_ref or os.sep in module_ref
    return module_ref, func_name, is_file


def find_file(module_ref: str, search_dirs: list[Path], what: str, ref: str,
              error: type[AbpError] = InvalidSpec) -> Path:
    path = Path(module_ref).expanduser()
    candidates = [path] if path.is_absolute() else [Path(base, path) for base in search_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise error(f"{what} file for {ref!r} not found (looked at {looked})", hint=FORM_HINT)


def load_file(path: Path, what: str, error: type[AbpError] = InvalidSpec) -> ModuleType:
    """Execute a .py file as a module, registered in sys.modules as pickling and dataclasses need."""
    name = "_abp_user_" + re.sub(r"\W", "_", str(path))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py suffixes
        raise error(f"cannot load {path} as Python for {what}", hint=FORM_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise error(f"importing {path} for {what} raised {describe(exc)}") from None
    return module


def import_module(name: str, what: str, error: type[AbpError] = InvalidSpec) -> ModuleType:
    importlib.invalidate_caches()  # the module may have been written after the last import
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise error(f"{what}: no python module named {name!r} (looked in the working directory and "
                        "sys.path)", hint=FORM_HINT) from None
        raise error(f"{what}: importing module {name!r} failed: {exc}", hint="install what it imports") from None
    except Exception as exc:
        raise error(f"{what}: importing module {name!r} raised {describe(exc)}") from None


def get_function(module: ModuleType, module_ref: str, func_name: str, what: str,
                 error: type[AbpError] = InvalidSpec) -> Callable[..., Any]:
    """`func_name` may be dotted (`Class.method`) for a staticmethod or classmethod."""
    obj: Any = module
    for part in func_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise error(f"{what}: python module {module_ref!r} has no function {func_name!r}",
                        hint="check the name after the ':'")
    if not callable(obj):
        raise error(f"{what}: {module_ref}:{func_name} is a {type(obj).__name__}, not a function")
    func: Callable[..., Any] = obj
    return func


def load_callable(ref: str, search_dirs: list[Path], what: str,
                  error: type[AbpError] = InvalidSpec) -> Callable[..., Any]:
    """Import `ref` and return the callable it names, or raise `error` with one clear line."""
    module_ref, func_name, is_file = split_ref(ref, what, error)
    path = find_file(module_ref, search_dirs, what, ref, error) if is_file else None
    search = [str(d) for d in search_dirs] + ([str(path.parent)] if path else [])
    with on_sys_path(search):
        module = load_file(path, what, error) if path else import_module(module_ref, what, error)
        return get_function(module, module_ref, func_name, what, error)
